"""The prepared GPU check: every measurement the READMEs need, in one run that fits a short GPU loan.

    bash benchmarks/gpu_check.sh OUT_DIR [--smoke]        (= python -m benchmarks.gpu_check OUT_DIR [--smoke])

Runs, each in its own process with its own time limit (a hang or crash in one does not lose the others):

1. ``benchmarks.train_step --cap-gib 24`` over every reproduce config, one process per method: peak allocated /
   reserved memory, train and eval images/s, fits 24 GiB at the published batch;
2. ``benchmarks.agcnn_crop --device cuda``: AG-CNN's batched attention crop vs the per-sample NumPy/OpenCV loop;
3. ``benchmarks.loader`` with as many workers as the machine has cores;

then writes ``OUT_DIR/gpu_check.md`` (one markdown page: the machine, the commit, the tables and the time to
reproduce each config, ``benchmarks.reproduce_time``) and ``OUT_DIR/gpu_check.json`` (every number). Nothing is
installed: it uses the Python it is started with (``.venv/bin/python`` when present, else ``python3``).

``--smoke`` runs the same on the CPU with tiny shapes (train_step ``--smoke`` on one config per method, a 4-image
crop batch, a 6-image loader twin) to prove that the pipeline works; those numbers are not measurements. CI runs
it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("adnet", "ham", "agcnn", "chextriev", "cxrclip")

# (name, arguments, share of the time budget) of each step; train_step runs once per method
FULL = {
    "agcnn_crop": ["--device", "cuda", "--batch", "64", "--reps", "9"],
    # training runs with engine.deterministic: true; AG-CNN's stage II measured 13 img/s under it (2026-12-04)
    "agcnn_crop_deterministic": ["--device", "cuda", "--batch", "64", "--reps", "5", "--deterministic"],
    "loader": ["--n", "200", "--epochs", "2"],
    "train_step": ["--cap-gib", "24", "--steps", "4", "--warmup", "1"],
}
SMOKE = {
    "agcnn_crop": ["--device", "cpu", "--batch", "4", "--reps", "1", "--threads", "1"],
    "agcnn_crop_deterministic": ["--device", "cpu", "--batch", "4", "--reps", "1", "--threads", "1",
                                 "--deterministic"],
    "loader": ["--n", "6", "--size", "64", "--workers", "0", "--epochs", "1", "--batch", "4",
               "--variants", "png1024", "png256", "cache256"],
    "train_step": ["--smoke", "--device", "cpu"],
}
# --smoke measures one config per method (its builder path; the GPU check measures them all) to stay under 2 min
SMOKE_CONFIGS = {"adnet": "nih_convnext", "ham": "nih_loc_fold1", "agcnn": "nih_resnet50", "chextriev": "v6",
                 "cxrclip": "r50_m"}
# seconds each step may take, as fractions of --budget-s (the rest is start-up and writing)
SHARES = {"train_step": 0.78, "agcnn_crop": 0.04, "agcnn_crop_deterministic": 0.04, "loader": 0.12}
EXTRA_STEPS = ("agcnn_crop", "agcnn_crop_deterministic", "loader")   # after train_step, each in its own process
# train_step's time is shared by these weights (rows to measure: AG-CNN 3 stages x 7 configs, CheXtriev 12
# variants x cached + full); a method that finishes early leaves its time to the next
METHOD_WEIGHT = {"adnet": 1.0, "ham": 1.0, "agcnn": 1.5, "chextriev": 2.0, "cxrclip": 1.0}

_RUNNER = """
import json, sys
from benchmarks import {module} as m
result = m.main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump(result, f, indent=1, default=str)
"""


def run_step(module: str, args: list[str], out_json: Path, timeout_s: float, log) -> dict:
    """Run ``benchmarks.<module>.main(args)`` in a child process; its returned dict, or {"error": why}."""
    cmd = [sys.executable, "-c", _RUNNER.format(module=module), str(out_json), *args]
    print(f"[gpu_check] {module} {' '.join(args)} (limit {timeout_s:.0f} s)", flush=True)
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
        error = "" if proc.returncode == 0 else f"exit code {proc.returncode} (see gpu_check.log)"
    except subprocess.TimeoutExpired:
        error = f"stopped at its {timeout_s:.0f} s limit"
    seconds = time.perf_counter() - t0
    print(f"[gpu_check]   {module}: {error or 'ok'} in {seconds:.0f} s", flush=True)
    # train_step also writes its file after every config: what a step stopped at its limit measured is kept
    result = json.loads(out_json.read_text()) if out_json.is_file() else {}
    return {**result, "seconds": round(seconds, 1), **({"error": error} if error else {})}


def machine() -> dict:
    """What the numbers were measured on, and which code measured them."""
    import torch
    info = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "host_cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "commit": commit()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 1024 ** 3, 1), cuda=torch.version.cuda)
    return info


def commit() -> str:
    """The commit measured: GPU_CHECK_COMMIT when set (a copied tree's .git can be stale: one said 33a964e for
    1814bde on 2026-12-04), else git's HEAD (+ '-dirty')."""
    if os.environ.get("GPU_CHECK_COMMIT"):
        return os.environ["GPU_CHECK_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_all(out: Path, smoke: bool, budget_s: float, methods: list[str]) -> dict:
    """Every step in turn; returns the combined result (also what gpu_check.json holds)."""
    steps = SMOKE if smoke else FULL
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    for old in parts.glob("*.json"):   # a result of an earlier check must not pass for this one's
        old.unlink()
    result: dict = {"machine": machine(), "smoke": smoke, "train_step": {}}
    t_end = time.monotonic() + budget_s
    with open(out / "gpu_check.log", "w") as log:
        for i, method in enumerate(methods):
            # each method gets its weight's share of what is left of train_step's budget
            left = budget_s * SHARES["train_step"] - sum(r["seconds"] for r in result["train_step"].values())
            share = 1.0 if smoke else METHOD_WEIGHT[method] / sum(METHOD_WEIGHT[m] for m in methods[i:])
            limit = max(30.0, left * share)   # --smoke checks correctness: any method may use all that is left
            part = parts / f"train_step_{method}.json"
            args = [*steps["train_step"], "--methods", method, "--json", str(part)]
            if smoke:
                args += ["--configs", SMOKE_CONFIGS[method]]
            result["train_step"][method] = run_step("train_step", args, part, limit, log)
        for name in EXTRA_STEPS:
            args = list(steps[name])
            if name == "loader":
                args += ["--data", str(out / "loader_data")]
            limit = max(20.0, min(budget_s * SHARES[name], t_end - time.monotonic()))
            module = name.removesuffix("_deterministic")
            result[name] = run_step(module, args, parts / f"{name}.json", limit, log)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder for gpu_check.md, gpu_check.json and the log")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: proves the pipeline (not measurements)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="total time for all steps (default 500 s on a GPU, 300 s with --smoke)")
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    a = p.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import torch
    if not a.smoke and not torch.cuda.is_available():
        p.error("no CUDA device: this check measures a GPU (use --smoke to test the pipeline on a CPU)")
    budget = a.budget_s or (300.0 if a.smoke else 500.0)
    out = Path(a.out)
    t0 = time.perf_counter()
    result = run_all(out, a.smoke, budget, a.methods)
    result["seconds"] = round(time.perf_counter() - t0, 1)

    from benchmarks.reproduce_time import render_page
    page = render_page(result)
    (out / "gpu_check.md").write_text(page)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(page)
    print(f"[gpu_check] wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'} in {result['seconds']:.0f} s")
    failed = [k for k, v in result["train_step"].items() if v.get("error")] + \
        [k for k in EXTRA_STEPS if result[k].get("error")]
    if failed:
        print(f"[gpu_check] steps with errors: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
