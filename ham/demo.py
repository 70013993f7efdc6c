"""HAM end to end on the synthetic NIH twin (CPU, a few minutes): train -> test -> attention page -> report.

    python -m ham.demo --data data/synthetic --out demo_out/ham

Generates DATA/nih (shared.data.synthetic, NIH layout) when missing, runs configs/demo.yaml into OUT, writes
OUT/results.json, report.md and visual/index.html, and prints the headline metrics. Synthetic numbers are a
smoke test of the pipeline, never a reproduction.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.data.synthetic import generate

from ham import test as ham_test
from ham import train as ham_train
from ham import visual as ham_visual
from ham.config import CONFIG_DIR

DEMO_N, DEMO_SIZE, DEMO_SEED = 300, 128, 0


def run_demo(data: Path, out: Path, extra: list[str] | None = None, visual: bool = True) -> dict:
    t0 = time.time()
    root = generate("nih", Path(data) / "nih", n=DEMO_N, size=DEMO_SIZE, seed=DEMO_SEED)
    sets = ["data.root=" + str(root)] + list(extra or [])
    run_dir = ham_train.main(["-cfg", str(CONFIG_DIR / "demo.yaml"), "--run-dir", str(out), "--set", *sets])
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
    loc = "" if t_iou is None else f", T(IoU@0.1) mean {t_iou.loc['mean', '0.1']:.3f}"
    print(f"HAM demo (synthetic NIH twin, NOT a reproduction): AUROC mean {res['auroc']['mean']:.3f}, anomaly AUROC "
          f"{res['ano_auroc']:.3f}{loc}; {res['seconds']:.0f} s; run {res['run_dir']}; page {res['page']}")
    return res


if __name__ == "__main__":
    main()
