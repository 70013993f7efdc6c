"""ADNet end to end on the synthetic NIH twin (CPU, about a minute on 2 free cores): train -> test -> report -> k-NN.

    python -m adnet.demo --data data/synthetic --out demo_out/adnet

Uses DATA/nih when it already holds a complete twin (any size: ``make demo`` writes one first), otherwise
generates one (shared.data.synthetic, NIH layout, 300 images at 128 px). Runs configs/demo.yaml — a TINY ADNet
(ConvNeXt stage structure, 16..128 channels, random init) at 96 px — into OUT, writes results.json, report.md,
test_metrics.md, roc.png, knn_metrics.md and summary.md, and prints the headline. Synthetic numbers are a smoke
test of the pipeline, never a reproduction of the paper.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `cd adnet && python demo.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

from shared.config import load_config
from shared.data import synthetic
from shared.demo import write_summary

from adnet.config import ADNetConfig

CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
DEMO_N, DEMO_SIZE, DEMO_SEED = 300, 128, 0


def ensure_twin(data: Path) -> Path:
    root = Path(data) / "nih"
    if (root / ".complete").is_file():
        return root
    return synthetic.generate("nih", root, n=DEMO_N, size=DEMO_SIZE, seed=DEMO_SEED)


def run_demo(data: Path, out: Path, overrides: list[str] | None = None, knn: bool = True) -> dict:
    from adnet import knn as adnet_knn
    from adnet import test as adnet_test
    from adnet import train as adnet_train
    from shared.report import read_results, report_run

    t0 = time.time()
    root = ensure_twin(data)
    out = Path(out)
    sets = [f"data.nih_root={root}", f"runs_root={out / 'runs'}"] + list(overrides or [])
    cfg = load_config(ADNetConfig, CONFIG, sets)
    run_dir = adnet_train.run(cfg)
    if adnet_test.main(["--run", str(run_dir)]) != 0:
        raise RuntimeError(f"python -m adnet.test --run {run_dir} failed (its error line is above)")
    train_s = time.time() - t0
    try:
        report_run(run_dir)
    except Exception as err:  # noqa: BLE001 - the report is a convenience here
        print(f"report: not written ({type(err).__name__}: {err})")
    results = read_results(run_dir / "results.json")
    auroc = results["metrics"]["auroc"]["mean"]
    knn_out = adnet_knn.run_knn(cfg, run_dir / "checkpoints" / "best.pt", run_dir) if knn else None
    seconds = time.time() - t0
    headline = f"test mean AUROC {auroc:.3f}"
    if knn_out is not None:
        headline += f", k-NN {knn_out['metrics']['auroc']['mean']:.3f}"
    headline += " (ADNet demo, synthetic NIH twin, tiny model: NOT a reproduction)"
    lines = [headline, "",
             f"- twin: {root}", f"- run: {run_dir}",
             f"- test mean AUROC (classifier): {auroc:.3f}",
             f"- train + test time: {train_s:.0f} s; total {seconds:.0f} s"]
    if knn_out is not None:
        lines.append(f"- k-NN mean AUROC (k={knn_out['k']}, t={knn_out['t']:g}, picked on test): "
                     f"{knn_out['metrics']['auroc']['mean']:.3f}")
    write_summary(out, lines)
    return {"run_dir": run_dir, "auroc": auroc, "knn": knn_out, "seconds": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adnet.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synthetic", help="where the synthetic twin lives / is generated")
    parser.add_argument("--out", default="demo_out/adnet")
    parser.add_argument("--no-knn", action="store_true")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (0: torch's default). The tiny model gains nothing from more; on a "
                             "busy machine extra threads made a training step 5-10x slower")
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch
        torch.set_num_threads(args.threads)
    run_demo(Path(args.data), Path(args.out), args.overrides, knn=not args.no_knn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
