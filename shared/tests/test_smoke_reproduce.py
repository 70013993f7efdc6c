"""`make reproduce-<method>-<dataset> SMOKE=1`: every reproduce target runs its own pipeline on the synthetic twin.

The fast tests read make's plan (`make -n`); the slow ones run every target end to end on a small twin, each in its
own make, as `make smoke-reproduce` does, and check the run directory it leaves (results.json, report.md).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared import demo

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def make(*args, check=False, timeout=60) -> subprocess.CompletedProcess:
    """`make ARGS` in the repository root with this interpreter (PY=... also skips `install`)."""
    cmd = ["make", "--no-print-directory", f"PY={sys.executable}", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=check)


def smoke_targets() -> list[str]:
    out = make("-s", "print-smoke-targets", check=True).stdout
    return out.split()


def defined_reproduce_targets() -> set[str]:
    """Every reproduce-* target make knows (its database), pattern rules left out."""
    db = make("-pRrq", ":").stdout
    return {m for m in re.findall(r"^(reproduce-[\w-]+):", db, re.M)}


TARGETS = smoke_targets()
# `make test` runs one target per method (~1 min each on 2 cores); CXR_SMOKE_ALL=1 runs all 34 (~35 min there), as
# `make smoke-reproduce` does
ONE_PER_METHOD = ["reproduce-adnet-nih", "reproduce-ham-chexpert", "reproduce-agcnn-nih", "reproduce-chextriev-mimic-v6",
                  "reproduce-cxrclip-mimic"]
END_TO_END = TARGETS if os.environ.get("CXR_SMOKE_ALL") == "1" else ONE_PER_METHOD
AGGREGATES = {"reproduce-chextriev-mimic", "reproduce-chextriev-mimic-fixed"}   # every CheXtriev variant (each a smoke target)


def test_every_reproduce_target_has_a_smoke_run():
    assert len(TARGETS) == 34 and len(set(TARGETS)) == len(TARGETS) and set(ONE_PER_METHOD) <= set(TARGETS)
    assert defined_reproduce_targets() - AGGREGATES == set(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_smoke_plan_uses_the_overlay_and_no_weight_files(target, tmp_path):
    plan = make("-n", target, "SMOKE=1", f"DATA={tmp_path}", f"RUNS={tmp_path / 'runs'}", check=True).stdout
    method = target.split("-")[1]
    trains = [line for line in plan.splitlines() if f"-m {method}.train" in line]
    assert trains and all(f"@{method}/smoke.yaml" in line for line in trains)
    assert all("--no-test" in line.split() for line in trains)   # the recipe's own test step is the only one
    assert ".pth" not in plan and "Bio_ClinicalBERT" not in plan   # no weight file is checked or loaded
    assert f"{tmp_path / 'runs'}/{method}" in plan   # the run directory goes under RUNS as without SMOKE


def test_smoke_without_data_reads_the_twin():
    plan = make("-n", "reproduce-adnet-nih", "SMOKE=1", check=True).stdout
    assert "data.nih_root=data/synthetic/nih" in plan


def test_without_smoke_the_targets_still_need_their_weights(tmp_path):
    plan = make("-n", "reproduce-adnet-nih", f"DATA={tmp_path}", check=True).stdout
    assert "convnext_tiny_ADNet_IN1K.pth.tar" in plan and "@adnet/smoke.yaml" not in plan


@pytest.mark.parametrize("target", TARGETS)
def test_without_smoke_no_twin_override_reaches_the_real_run(target, tmp_path):
    # a real run keeps its config's data: no smoke overlay, no twin-only file (reproduce-ham-chexpert once looked
    # for the twin's BBoxes.json inside the user's CheXpert folder instead of HAM's shipped boxes)
    plan = make("-n", target, f"DATA={tmp_path}", check=True).stdout
    assert "smoke.yaml" not in plan and "BBoxes.json" not in plan and "box_sizes.csv" not in plan


def test_smoke_reproduce_keeps_its_runs_apart_from_real_ones(tmp_path):
    """The 34 toy runs go to runs_smoke/, never runs/ where `make results` reads real ones (RUNS=... wins)."""
    def smoke_runs(*args: str) -> str:   # (`make -n smoke-reproduce` would run its sub-makes: it calls $(MAKE))
        return make("-s", "--eval", "show-smoke-runs: ; @echo $(SMOKE_RUNS)", "show-smoke-runs", *args).stdout.strip()

    assert smoke_runs() == "runs_smoke" and smoke_runs(f"RUNS={tmp_path}") == str(tmp_path)
    recipe = make("-pRrq", "smoke-reproduce").stdout
    assert "RUNS=$(SMOKE_RUNS)" in recipe and "log=$(SMOKE_RUNS)/smoke_logs/" in recipe and "RUNS=$(RUNS)" not in recipe


def test_bad_input_is_one_line_with_the_fix(tmp_path):
    wrong = make("reproduce-adnet-nhi")
    assert wrong.returncode == 2 and "no target reproduce-adnet-nhi; reproduce targets: reproduce-adnet-nih" \
        in wrong.stderr
    no_data = make("reproduce-adnet-nih", f"DATA={tmp_path / 'nothere'}")
    assert no_data.returncode == 2 and len(no_data.stderr.splitlines()) <= 2   # the line, then make's own
    assert f"{tmp_path / 'nothere'}/nih is missing" in no_data.stderr and "set DATA=" in no_data.stderr
    missing = make("smoke-reproduce", f"DATA={tmp_path / 'nothere'}")
    assert missing.returncode == 2
    assert f"DATA folder not found: {tmp_path / 'nothere'}" in missing.stderr and "make twin" in missing.stderr


# --------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    """A small twin of every layout, in the folders a DATA root has (chextriev's test split needs ~120 images)."""
    data = tmp_path_factory.mktemp("smoke_data")
    demo.ensure_twins(data, n=120, size=96, seed=0, log=lambda *_: None)
    return data


def _run_dirs(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.rglob("results.json"))


@pytest.mark.slow
@pytest.mark.parametrize("target", END_TO_END)
def test_smoke_target_runs_end_to_end(target, twin, tmp_path):
    runs = tmp_path / "runs"
    done = make(target, "SMOKE=1", f"DATA={twin}", f"RUNS={runs}", timeout=580)
    assert done.returncode == 0, f"{target} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    method = target.split("-")[1]
    found = _run_dirs(runs / method)
    assert found, f"{target}: no results.json under {runs / method}"
    for run in found:
        assert (run / "config.yaml").is_file() and (run / "report.md").is_file()
        assert json.loads((run / "results.json").read_text())["metrics"]
    if target == "reproduce-adnet-all":   # pretraining on all three datasets, then a fine-tune on NIH and MIMIC
        assert {p.parent.name for p in found} == {"all_convnext", "all_nih_convnext", "all_mimic_convnext"}
