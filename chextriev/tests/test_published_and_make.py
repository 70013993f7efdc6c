"""published.yaml matches what test.py writes; the reproduce targets fail clearly without the datasets."""
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from shared.config import load_config
from shared.metrics.retrieval import CLASS_AVERAGE
from shared.report import compare, load_published

from chextriev.config import ChextrievConfig
from chextriev.test import results_metrics

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parent


def test_every_config_names_a_published_entry():
    table = load_published(HERE)
    for path in sorted((HERE / "configs").glob("*.yaml")):
        cfg = load_config(ChextrievConfig, path)
        if path.stem not in ("base", "demo"):
            assert cfg.published_key in table, path.name
    assert table["V6"]["metrics"]["mAP@10"][CLASS_AVERAGE] == 0.529
    assert "status" in table["V4"]                          # no published V4 row: said, not invented


def test_published_numbers_line_up_with_test_py_metrics():
    table = pd.DataFrame({"mAP": [0.5], "mHR": [0.4], "mRR": [0.6]}, index=[CLASS_AVERAGE])
    metrics = results_metrics({(k, False): table for k in (3, 5, 10)})
    results = {"method": "chextriev", "config": "v6", "published_key": "V6", "metrics": metrics}
    df = compare(results, load_published(HERE)["V6"])
    assert df.loc[("mAP@10", CLASS_AVERAGE), "published"] == pytest.approx(0.529)
    assert df.loc[("mRR@3", CLASS_AVERAGE), "delta"] == pytest.approx(0.6 - 0.553)
    assert len(df) == 9                                      # every published number has our counterpart


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_reproduce_target_names_the_expected_layout(tmp_path):
    proc = subprocess.run(["make", "-o", "install", "reproduce-chextriev-mimic-v6", f"DATA={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "MIMIC-CXR-JPG" in proc.stderr and "silver/scene_graph" in proc.stderr
    assert "silver_dataset/scene_graph" in proc.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("layout", ["silver_dataset/scene_graph", "silver/scene_graph"])
def test_reproduce_check_accepts_both_imagenome_layouts(tmp_path, layout):
    """PhysioNet ships silver_dataset/scene_graph; the loader also reads silver/scene_graph: the check passes the
    ImaGenome test for both and stops at the next missing thing (the ImageNet weights)."""
    (tmp_path / "mimic-cxr-jpg").mkdir()
    (tmp_path / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,split\n")
    (tmp_path / "chest-imagenome" / layout).mkdir(parents=True)
    proc = subprocess.run(["make", "-o", "install", "reproduce-chextriev-mimic-v6", f"DATA={tmp_path}",
                           f"CHEXTRIEV_WEIGHTS={tmp_path / 'weights'}", f"PY={sys.executable}"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Chest ImaGenome not found" not in proc.stderr
    assert "weight files missing" in proc.stderr and f"not found: {tmp_path}/weights/resnet50_imagenet.pth" in proc.stderr
    dry = subprocess.run(["make", "-n", "-o", "install", "reproduce-chextriev-mimic", f"DATA={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    trained = [line for line in dry.stdout.splitlines() if "-m chextriev.train" in line]
    assert len(trained) == len(list((HERE / "configs").glob("*.yaml"))) - 2     # every variant but base, demo
