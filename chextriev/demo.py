"""End-to-end CheXtriev demo on the synthetic twin (CPU, a few minutes): prepare -> train -> test -> report.

    python -m chextriev.demo --data data/synthetic --out demo_out

Uses DATA/chest-imagenome (the synthetic ImaGenome + MIMIC-CXR-JPG twin that ``make demo`` writes, whatever its size)
and generates it only when no complete twin is there (never overwriting another one), prepares it
into OUT/prepared, trains configs/demo.yaml (V6 with a small random-init frozen CNN on 48 px crops,
cached features) into OUT/runs, evaluates retrieval on the synthetic test split and prints the
headline (9-class Class Average mAP@10) next to a random-embedding baseline. Synthetic numbers say only that the
pipeline runs and learns; they are not a reproduction. The headline also goes to OUT/summary.md (shown by
``make demo``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from shared.config import load_config
from shared.demo import write_summary
from shared.data import synthetic
from shared.metrics.retrieval import CLASS_AVERAGE, knn_search, retrieval_metrics

from chextriev.config import ChextrievConfig
from chextriev.prepare import Prepared, prepare

CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
N_IMAGES, SIZE, SEED = 240, 128, 0


def ensure_twin(twin: Path) -> Path:
    """A complete synthetic ImaGenome twin at ``twin``: the one already there (any size), else a new one."""
    marker = twin / ".complete"
    if marker.is_file() and json.loads(marker.read_text()).get("layout") == "imagenome":
        return twin
    print(f"generating the synthetic ImaGenome twin in {twin} ...")
    return synthetic.generate("imagenome", twin, n=N_IMAGES, size=SIZE, seed=SEED)


def run_demo(data: str | Path, out: str | Path, overrides: Sequence[str] = ()) -> dict:
    from chextriev.test import run_test
    from chextriev.train import train
    from shared.report import report_run

    t0 = time.perf_counter()
    data, out = Path(data), Path(out)
    twin = ensure_twin(data / synthetic.DATA_FOLDERS["imagenome"])
    prepared_dir = out / "prepared"
    shutil.rmtree(prepared_dir, ignore_errors=True)      # fresh: a kept index or feature cache may be stale
    prepare(twin, twin, prepared_dir, workers=2)
    cfg = load_config(ChextrievConfig, CONFIG, [f"data.prepared={prepared_dir}",
                                                f"runs_root={out / 'runs'}", *overrides])
    run_dir = train(cfg)
    res = run_test(cfg, run_dir)
    print(report_run(run_dir))
    table = res["tables9"][(10, False)]
    prepared = Prepared(prepared_dir)
    test_rows = prepared.split("test")
    labels = prepared.labels[test_rows].any(1).astype(np.int64)
    rng = np.random.default_rng(0)
    _, rand_nb = knn_search(rng.normal(size=(len(test_rows), 32)).astype(np.float32), 10)
    random_map = retrieval_metrics(labels, rand_nb, 10, empty_class="zero").loc[CLASS_AVERAGE, "mAP"]
    summary = {"run_dir": str(run_dir), "mAP@10": float(table.loc[CLASS_AVERAGE, "mAP"]),
               "mHR@10": float(table.loc[CLASS_AVERAGE, "mHR"]), "mRR@10": float(table.loc[CLASS_AVERAGE, "mRR"]),
               "random_mAP@10": float(random_map), "seconds": time.perf_counter() - t0}
    line = (f"CheXtriev demo (synthetic, V6-demo, {len(test_rows)} test images): Class Average mAP@10 "
            f"{summary['mAP@10']:.3f} (random embedding {random_map:.3f}), mHR@10 {summary['mHR@10']:.3f}, "
            f"mRR@10 {summary['mRR@10']:.3f}; {summary['seconds']:.0f} s -> {run_dir}")
    print()
    write_summary(out, [line])
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/synthetic", help="where the synthetic twin lives / is generated")
    p.add_argument("--out", default="demo_out/chextriev", help="output directory")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides for configs/demo.yaml")
    args = p.parse_args(argv)
    run_demo(args.data, args.out, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
