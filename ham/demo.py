"""HAM end to end on the synthetic NIH twin (CPU, a few minutes): train -> test -> attention page -> report.

    python -m ham.demo --data data/synthetic --out demo_out/ham

Uses its own twin DATA/ham_nih (shared.data.synthetic, NIH layout, generated once, reused when complete with the
same parameters, replaced when its parameters differ: the shared DATA/nih twin of ``make demo`` is never
overwritten), runs configs/demo.yaml into OUT, writes OUT/results.json, report.md and visual/index.html, and prints
the headline metrics. Synthetic numbers are a smoke test of the pipeline, never a reproduction.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `cd ham && python demo.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

from shared.demo import fresh_twin, write_summary

from ham import test as ham_test
from ham import train as ham_train
from ham import visual as ham_visual
from ham.config import CONFIG_DIR

DEMO_N, DEMO_SIZE, DEMO_SEED = 240, 64, 0


def run_demo(data: Path, out: Path, extra: list[str] | None = None, visual: bool = True, n: int = DEMO_N,
             size: int = DEMO_SIZE, seed: int = DEMO_SEED) -> dict:
    t0 = time.time()
    root = Path(data) / "ham_nih"
    fresh_twin(root, "nih", n, size, seed)
    sets = ["data.root=" + str(root)] + list(extra or [])
    run_dir = ham_train.main(["-cfg", str(CONFIG_DIR / "demo.yaml"), "--no-test", "--run-dir", str(out),
                              "--set", *sets])
    res = ham_test.main(["--run", str(run_dir)])
    page = ham_visual.main(["--run", str(run_dir)]) if visual else None
    try:
        from shared.report import report_run
        report_run(run_dir)
    except Exception as err:  # noqa: BLE001 - the report is a convenience here
        print(f"report: not written ({type(err).__name__}: {err})")
    res.update(run_dir=run_dir, page=page, seconds=time.time() - t0)
    return res


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synthetic", help="where the synthetic twin lives / is generated")
    parser.add_argument("--out", default="demo_out/ham", help="run directory of the demo")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    res = run_demo(Path(args.data), Path(args.out), args.overrides)
    t_iou = res["t_iou"]
    headline = f"test mean AUROC {res['auroc']['mean']:.3f}"
    if t_iou is not None:
        headline += f", T(IoU@0.1) {t_iou.loc['mean', '0.1']:.3f}"
    headline += " (HAM demo, synthetic NIH twin, tiny model: NOT a reproduction)"
    lines = [headline, "",
             f"- run: {res['run_dir']}", f"- test mean AUROC (14 classes): {res['auroc']['mean']:.3f}",
             f"- anomaly-head AUROC: {res['ano_auroc']:.3f}"]
    if t_iou is not None:
        lines.append(f"- T(IoU@0.1) / T(IoU@0.5), mean over the box classes: {t_iou.loc['mean', '0.1']:.3f} / "
                     f"{t_iou.loc['mean', '0.5']:.3f}")
    lines += [f"- attention page: {res['page']}", f"- total time: {res['seconds']:.0f} s"]
    write_summary(args.out, lines)
    return res


if __name__ == "__main__":
    main()
