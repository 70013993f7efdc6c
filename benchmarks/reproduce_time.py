"""Time to reproduce each config, from measured images/s, and the page ``benchmarks/gpu_check.sh`` writes.

    python -m benchmarks.reproduce_time GPU_CHECK_JSON [--out PAGE.md]     (re-renders a saved check)

wall time = training samples per epoch x epochs / train img/s + evaluated samples / eval img/s, where the images/s
are ``benchmarks.train_step``'s (random tensors on the GPU: data loading is assumed to keep up, which
``benchmarks.loader`` checks separately) and the sample counts come from each config's recipe and dataset
(``WORKLOADS``). A config with several phases (AG-CNN's stages) adds them up.

RTX 3090 estimate: the measured time scaled by a range of spec-sheet ratios to the measured GPU, since these
models are neither purely compute- nor purely memory-bound: from the ratio of memory bandwidth (H200 4.8 TB/s vs
RTX 3090 936 GB/s: 5.1x; the lower end) to the ratio of dense tensor throughput (H200 989 TFLOP/s bf16 vs RTX 3090
71 TFLOP/s fp16 with fp32 accumulation: 13.9x; the upper end). Only an H200 has those ratios here; for another GPU
the column says so.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

# (low, high) slow-down of an RTX 3090 against the measured GPU, by GPU name: see the module docstring
RTX3090_SLOWDOWN = {"H200": (4.8e12 / 936e9, 989e12 / 71e12)}


@dataclass(frozen=True)
class Work:
    """How many samples a config pushes through training and evaluation, from its recipe."""

    train: int                 # training samples per epoch
    epochs: float
    evaluated: int             # samples through the evaluation forward over the whole run (validations + test)
    source: str                # where the counts come from


# NIH official lists: train_val 86,524 / test 25,596; 70/10/20 patient splits of 112,120 for HAM's and AG-CNN's
# random splits; CheXpert-v1.0-small train 223,414 (frontal ~191k); MIMIC-CXR-JPG 2.0.0: 377,110 images
# (frontal ~243k); Chest ImaGenome silver frontal images with scene graphs ~ 237k (train ~ 166k after the split).
NIH_TRAINVAL, NIH_TEST, NIH_ALL = 86_524, 25_596, 112_120
WORKLOADS: dict[tuple[str, str], Work] = {}


def _add(method: str, configs: str, work: Work) -> None:
    for c in configs.split():
        WORKLOADS[(method, c)] = work


# ADNet: train on 80 % of train_val (the rest validates every epoch), 30 epochs; test on the official test list
_add("adnet", "nih_convnext nih_resnet50",
     Work(int(NIH_TRAINVAL * 0.8), 30, int(NIH_TRAINVAL * 0.2) * 30 + NIH_TEST, "NIH train_val 80/20, 30 epochs"))
_add("adnet", "mimic_convnext mimic_resnet50",
     Work(200_000, 30, 20_000 * 30 + 30_000, "MIMIC frontal train ~200k, 30 epochs (approximate counts)"))
_add("adnet", "chexpert_resnet50",
     Work(191_000, 20, 234 * 20 * (191_000 // (32 * 200)) + 234, "CheXpert frontal ~191k, 20 epochs, val every 200 it"))
_add("adnet", "all_convnext all_resnet50",
     Work(470_000, 30, 40_000 * 30 + 80_000, "NIH + MIMIC + CheXpert ~470k, 30 epochs (approximate counts)"))
_add("adnet", "all_nih_convnext all_nih_resnet50",
     Work(int(NIH_TRAINVAL * 0.8), 30, int(NIH_TRAINVAL * 0.2) * 30 + NIH_TEST, "fine-tune on NIH as nih_*"))
_add("adnet", "all_mimic_convnext all_mimic_resnet50",
     Work(200_000, 30, 20_000 * 30 + 30_000, "fine-tune on MIMIC as mimic_*"))
# HAM: 20 epochs over the training fold (70 % of NIH), validation each epoch, test 20 %
_add("ham", "nih_cls_fold1 nih_cls_fold2 nih_cls_fold3 nih_cls_fold4 nih_cls_fold5 nih_without_bboxes",
     Work(int(NIH_ALL * 0.7), 20, int(NIH_ALL * 0.1) * 20 + int(NIH_ALL * 0.2), "NIH 70/10/20 fold, 20 epochs"))
_add("ham", "nih_loc_fold1 nih_loc_fold2 nih_loc_fold3 nih_loc_fold4 nih_loc_fold5",
     Work(int(NIH_ALL * 0.7), 30, int(NIH_ALL * 0.1) * 30 + int(NIH_ALL * 0.2), "NIH fold + 80 % of boxes, 30 ep."))
_add("ham", "nih_official_split",
     Work(NIH_TRAINVAL, 20, NIH_TEST * 21, "official lists, 20 epochs (validates on test each epoch)"))
_add("ham", "chexpert", Work(191_000, 20, 234 * 20 + 500, "CheXpert frontal ~191k, 20 epochs"))
# AG-CNN: three stages of 50 epochs each over the CheXNet train list (78,468); val 11,219 per epoch; test 22,433
for _c in "nih_resnet50 nih_densenet121 nih_l1 nih_l2".split():
    _add("agcnn", _c, Work(78_468, 50, 11_219 * 50 + 22_433, "CheXNet split, 50 epochs per stage"))
for _c in "nih_official_resnet50 nih_official_densenet121".split():
    _add("agcnn", _c, Work(int(NIH_TRAINVAL * 0.875), 50, int(NIH_TRAINVAL * 0.125) * 50 + NIH_TEST,
                           "official lists, 50 epochs per stage"))
_add("agcnn", "repo_densenet121_joint", Work(78_468, 50, 11_219 * 50 + 22_433, "CheXNet split, 50 epochs"))
# CheXtriev: Chest ImaGenome frontal train ~166k; validation twice per epoch on ~24k; test 3,191 queries + index
for _c in "resnet50 anaxnet ath v0_global v0_node v1 v2 v3 v4 v5 v6 v6_learnable_edges".split():
    _add("chextriev", _c, Work(166_000, 10, 24_000 * 20 + 50_000, "ImaGenome ~166k, ~10 epochs (early stopping)"))
# CXR-CLIP: MIMIC ~218k pairs (M), + CheXpert ~191k (M,C), + NIH ~89k (M,C,C14); 15 epochs; val each epoch
for _c, _n in (("m", 218_000), ("mc", 409_000), ("mcc", 498_000)):
    for _b in ("r50", "swint"):
        _add("cxrclip", f"{_b}_{_c}", Work(_n, 15, 5_000 * 15, "pairs per epoch (approximate), 15 epochs"))


def hours(row: dict, work: Work | None) -> float | None:
    """Estimated wall hours of one phase row on the measured GPU, or None without the numbers."""
    if work is None or not row.get("train_ips") or not row.get("eval_ips"):
        return None
    return (work.train * work.epochs / row["train_ips"] + work.evaluated / row["eval_ips"]) / 3600


def config_hours(phases: list[dict], work: Work | None) -> float | None:
    """A config's hours: its phases added up; where CheXtriev trains on cached features, training and evaluation
    run at the cached row's speed, plus one frozen-CNN pass over every image to build the cache."""
    cached = [r for r in phases if r.get("phase") == "cached features"]
    if cached:
        full = next((r for r in phases if r is not cached[0]), None)
        h = hours(cached[0], work)
        if h is None or full is None or not full.get("eval_ips"):
            return None
        return h + (work.train + work.evaluated) / full["eval_ips"] / 3600
    total = 0.0
    for row in phases:
        h = hours(row, work)
        if h is None:
            return None
        total += h
    return total


def time_rows(result: dict) -> list[dict]:
    """Per config: hours on the measured GPU and the RTX 3090 range."""
    gpu = result["machine"].get("gpu", "")
    slow = next((v for k, v in RTX3090_SLOWDOWN.items() if k in gpu), None)
    phases: dict[tuple, list[dict]] = {}
    for method, step in result["train_step"].items():
        for row in step.get("rows", []):
            for config in row["configs"]:
                phases.setdefault((method, config), []).append(row)
    out = []
    for (method, config), rows in phases.items():
        work = WORKLOADS.get((method, config))
        h = None if any(r.get("error") for r in rows) else config_hours(rows, work)
        out.append({"method": method, "config": config, "hours": h,
                    "source": work.source if work else "no recipe counts",
                    "rtx3090_hours": None if slow is None or h is None else (h * slow[0], h * slow[1])})
    return out


def _h(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def render_page(result: dict) -> str:
    """The markdown page of one gpu_check run."""
    from benchmarks.train_step import Row, render
    m = result["machine"]
    head = [f"# GPU check {m['date']}", "",
            f"Machine: {m.get('gpu', 'no GPU')}" + (f" ({m['gpu_memory_gib']} GiB, CUDA {m['cuda']})" if 'gpu' in m
                                                     else "") +
            f", {m['host_cpus']} CPU cores; torch {m['torch']}, Python {m['python']}; commit {m['commit']}; "
            f"whole check {result.get('seconds', 0):.0f} s.", ""]
    if m.get("note"):
        head += [f"Note: {m['note']}.", ""]
    if result["smoke"]:
        head += ["**SMOKE RUN** (CPU, tiny shapes): the numbers below are NOT measurements.", ""]

    rows, baselines, limit = [], {}, 24.0
    for method, step in result["train_step"].items():
        limit = step.get("limit_gib", limit)
        rows += [Row(**{**r, "configs": list(r["configs"])}) for r in step.get("rows", [])]
        if step.get("error"):
            rows.append(Row(method, ["(the rest)" if step.get("rows") else "(all)"], error=step["error"]))
        for i, b in enumerate(step.get("baselines", [])):
            b = Row(**{**b, "configs": []})
            b.phase = f"timm resnet50, {b.amp} ({method}'s process)"
            baselines[(method, i)] = b
    device = next((s.get("device") for s in result["train_step"].values() if s.get("device")), "?")
    parts = head + ["## Peak memory and images/s per reproduce config (`benchmarks.train_step`)", "",
                    render(rows, baselines, limit, device, result["smoke"]), ""]

    parts += ["## Time to reproduce (estimated from the images/s above; `benchmarks.reproduce_time`)", "",
              "| method | config | hours on this GPU | hours on an RTX 3090 (range) | sample counts |",
              "|---|---|---|---|---|"]
    for r in time_rows(result):
        r3090 = "-" if r["rtx3090_hours"] is None else f"{r['rtx3090_hours'][0]:.0f}-{r['rtx3090_hours'][1]:.0f}"
        parts.append(f"| {r['method']} | {r['config']} | {_h(r['hours'])} | {r3090} | {r['source']} |")
    parts += ["", "Training + evaluation compute only (data loading assumed to keep up; see the loader table). "
              "RTX 3090 range: this GPU's time x 5.1 (memory-bandwidth ratio) to x 13.9 (dense tensor-throughput "
              "ratio), spec-sheet figures; see benchmarks/reproduce_time.py.", ""]

    parts += ["## AG-CNN attention crop (`benchmarks.agcnn_crop`)", "",
              "| device | deterministic | batch | batched img/s | per-sample img/s | batched / per-sample | "
              "boxes agree |", "|---|---|---|---|---|---|---|"]
    for key in ("agcnn_crop", "agcnn_crop_deterministic"):
        crop = result.get(key, {})
        if crop.get("error") or "ratio" not in crop:
            parts.append(f"| {key}: not measured ({crop.get('error', 'no result')}) | | | | | | |")
            continue
        parts.append(f"| {crop['device']} | {crop.get('deterministic', False)} | {crop['batch']} | "
                     f"{crop['batched_img_s']:.0f} | {crop['per_sample_img_s']:.0f} | {crop['ratio']:.2f}x | "
                     f"{crop['box_agreement']:.0%} |")
    loader = result.get("loader", {})
    parts += ["", "## Training loader (`benchmarks.loader`)", ""]
    if loader.get("error") or "images_per_s" not in loader:
        parts.append(f"not measured: {loader.get('error', 'no result')}")
    else:
        parts += [f"{loader['workers']} workers ({loader['cpu_count']} cores), batch {loader['batch']}, "
                  f"{loader['n']} synthetic NIH images at {loader['size']} px:", "",
                  "| variant | img/s | vs png1024 |", "|---|---|---|"]
        ratios = loader.get("ratio_vs_png1024") or {}
        parts += [f"| {v} | {r:.0f} | {ratios.get(v, float('nan')):.2f}x |"
                  for v, r in loader["images_per_s"].items()]
    return "\n".join(parts) + "\n"


def method_table(result: dict, method: str) -> str:
    """One method's rows as its README shows them: measured peak memory, images/s and time to reproduce."""
    hours = {r["config"]: r for r in time_rows(result) if r["method"] == method}
    lines = ["| config | phase | batch (x accum) / eval | peak alloc / reserved GiB | train img/s | eval img/s | "
             "fits 24 GiB | hours, this GPU | hours, RTX 3090 (est.) |", "|---|---|---|---|---|---|---|---|---|"]
    step = result["train_step"].get(method, {})
    for row in step.get("rows", []):
        first = hours.get(row["configs"][0], {})
        r3090 = first.get("rtx3090_hours")
        peak = [v for v in (row["train_peak_alloc_gib"], row["eval_peak_alloc_gib"]) if v is not None]
        res = [v for v in (row["train_peak_reserved_gib"], row["eval_peak_reserved_gib"]) if v is not None]
        lines.append(" | ".join([
            "| " + ", ".join(f"`{c}`" for c in row["configs"]), row["phase"] or "-", row["batch"],
            f"{max(peak):.1f} / {max(res):.1f}" if peak and res else "-", _h(row["train_ips"]),
            _h(row["eval_ips"]), row["fits"] + (f" ({row['error']})" if row["error"] else ""),
            _h(first.get("hours")), "-" if not r3090 else f"{r3090[0]:.0f}-{r3090[1]:.0f}"]) + " |")
    if step.get("error"):
        lines.append(f"| (not measured: {step['error']}) | | | | | | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reproduce_time", description=__doc__.split("\n\n")[0])
    p.add_argument("json", help="a gpu_check.json")
    p.add_argument("--out", default=None, help="write the page here (default: print it)")
    p.add_argument("--method", default=None, help="only this method's table, as its README shows it")
    a = p.parse_args(argv)
    result = json.loads(Path(a.json).read_text())
    page = method_table(result, a.method) if a.method else render_page(result)
    if a.out:
        Path(a.out).write_text(page)
    else:
        print(page)
    return page


if __name__ == "__main__":
    main()
