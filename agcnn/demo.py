"""AG-CNN end to end on the synthetic NIH twin (CPU, well under 2 minutes): three-stage training -> test -> report.

    python -m agcnn.demo --data data/synthetic --out demo_out/agcnn [--set train.global_stage.epochs=2 ...]

Uses the NIH twin under DATA/nih when one is there (``make demo`` writes it), else generates one. Trains
configs/demo.yaml into OUT (global, local on attention crops, fusion), evaluates the test split (per-class AUROC of
the three branches in the paper's column order, tau sweep), and writes OUT/summary.md, results.json, report.md,
overlays/*.png (heatmap, crop box, true boxes, findings) and tau_sweep.png. Synthetic numbers test the pipeline, never the paper.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `cd agcnn && python demo.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import torch

from shared.data.synthetic import generate
from shared.demo import write_summary

from agcnn import test as agcnn_test
from agcnn import train as agcnn_train

CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
DEMO_N, DEMO_SIZE, DEMO_SEED = 300, 128, 0   # only when run alone: under `make demo` DATA/nih is there


def nih_twin(data: Path) -> Path:
    """DATA/nih when it holds a finished NIH twin (any size), else a freshly generated one."""
    root = Path(data) / "nih"
    try:
        if json.loads((root / ".complete").read_text()).get("layout") == "nih":
            return root
    except (OSError, ValueError):
        pass
    return generate("nih", root, n=DEMO_N, size=DEMO_SIZE, seed=DEMO_SEED)


def summarise(out: Path, metrics: dict, seconds: float) -> Path:
    rows = {"global": metrics["auroc_global"], "local": metrics["auroc_local"], "fusion": metrics["auroc"]}
    sweep = metrics["tau_sweep"]
    headline = (f"AG-CNN demo (synthetic NIH twin, NOT a reproduction): mean AUROC global {rows['global']['mean']:.3f}"
                f" / local {rows['local']['mean']:.3f} / fusion {rows['fusion']['mean']:.3f}; {seconds:.0f} s")
    lines = [headline, "",
             "```", agcnn_test.format_table(rows), "```", "",
             "| tau | local | fusion |", "|---|---|---|"]
    lines += [f"| {t} | {sweep['local'][t]:.3f} | {sweep['fusion'][t]:.3f} |" for t in sweep["local"]]
    lines += ["", f"Pictures: {out / 'overlays'} (heatmap, crop box, true boxes, findings), {out / 'tau_sweep.png'}, {out / 'report.png'}"]
    return write_summary(out, lines, echo=False)


def run_demo(data: Path, out: Path, overrides: list[str] | None = None) -> dict:
    t0 = time.time()
    root = nih_twin(data)
    sets = [f"data.root={root}", *(overrides or [])]
    run_dir = agcnn_train.main(["-cfg", str(CONFIG), "--no-test", "--run-dir", str(out), "--set", *sets])
    metrics = agcnn_test.main(["--run", str(run_dir)])
    try:
        from shared.report import report_run
        report_run(run_dir)
    except Exception as err:  # noqa: BLE001 - the report is a convenience here
        print(f"report: not written ({type(err).__name__}: {err})")
    summary = summarise(Path(run_dir), metrics, time.time() - t0)
    return {"metrics": metrics, "run_dir": run_dir, "summary": summary, "seconds": time.time() - t0}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synthetic", help="where the synthetic twin lives / is generated")
    parser.add_argument("--out", default="demo_out/agcnn", help="run directory of the demo")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: a tiny model runs fastest single-threaded on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = run_demo(Path(args.data), Path(args.out), args.overrides)
    print(res["summary"].read_text().splitlines()[0] + f"; run {res['run_dir']}")
    return res


if __name__ == "__main__":
    main()
