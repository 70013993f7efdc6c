"""`make eval-authors-cxrclip` and the reproduce targets: clear errors first, then the protocol's commands."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cxrclip.config import TrainConfig
from shared.config import load_config

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(*args: str, dry: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n" if dry else "-s", "-o", "install", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_eval_authors_names_a_missing_checkpoint(tmp_path):
    res = _make("eval-authors-cxrclip", f"WEIGHTS={tmp_path / 'r50_mcc.tar'}", f"DATA={tmp_path}")
    assert res.returncode != 0 and "WEIGHTS=FILE must name a released checkpoint" in res.stdout
    (tmp_path / "my.tar").write_bytes(b"")
    res = _make("eval-authors-cxrclip", f"WEIGHTS={tmp_path / 'my.tar'}", f"DATA={tmp_path}")
    assert res.returncode != 0 and "set CXRCLIP_CONFIG=r50_mcc" in res.stdout


def test_eval_authors_runs_one_valid_test_per_published_set(tmp_path):
    weights = tmp_path / "swint_mc.tar"
    res = _make("eval-authors-cxrclip", f"WEIGHTS={weights}", f"DATA={tmp_path}", f"RUNS={tmp_path / 'runs'}",
                dry=True)
    commands = [c for c in res.stdout.split(" && ") if "-m cxrclip.test" in c]
    assert len(commands) == 6, res.stdout
    for command, evaluation in zip(commands, ["chexpert5x200", "mimic", "openi", "rsna", "siim", "vindr"]):
        argv = shlex.split(command[command.index("-m cxrclip.test"):])
        assert argv[argv.index("-cfg") + 1] == "cxrclip/configs/swint_mc.yaml"
        assert argv[argv.index("--weights") + 1] == str(weights)
        cfg = load_config(TrainConfig, REPO / "cxrclip/configs/swint_mc.yaml", argv[argv.index("--set") + 1:])
        assert cfg.name == f"swint_mc-{evaluation}" and cfg.output_root == str(tmp_path / "runs")
        ev = cfg.eval
        chosen = {k for k in ("retrieval_root", "zeroshot_root", "zeroshot_csv", "chexpert5x200_csv") if getattr(ev, k)}
        assert len(chosen) == 1, (evaluation, chosen)   # one evaluation per run: the others are switched off
        if evaluation == "rsna":
            assert ev.zeroshot_classes == ["Pneumonia"]
            assert ev.binary_prompts == {"Pneumonia": ["No evidence of pneumonia", "Findings suggesting pneumonia."]}
        if evaluation == "openi":
            assert ev.retrieval_layout == "csv" and ev.retrieval_root.endswith("openi/openi_test.csv")


def test_reproduce_mc_needs_the_prompt_file_and_the_5x200_csv(tmp_path):
    mimic = tmp_path / "mimic-cxr-jpg"
    mimic.mkdir()
    (mimic / "mimic-cxr-2.0.0-split.csv").write_text("")
    (tmp_path / "chexpert").mkdir()
    (tmp_path / "chexpert" / "train.csv").write_text("")
    args = ["reproduce-cxrclip-mimic", "CXRCLIP_CONFIG=r50_mcc", f"DATA={tmp_path}", f"RUNS={tmp_path / 'r'}",
            f"CXRCLIP_PROMPTS={tmp_path / 'prompts.json'}"]
    res = _make(*args)
    assert res.returncode == 2 and f"GLoRIA's chexpert_5x200.csv at {tmp_path / 'chexpert/chexpert_5x200.csv'}" \
        in res.stdout
    (tmp_path / "chexpert" / "chexpert_5x200.csv").write_text("")
    assert "ChestX-ray14 at" in _make(*args).stdout          # then the NIH data
    (tmp_path / "nih").mkdir()
    (tmp_path / "nih" / "Data_Entry_2017.csv").write_text("")
    res = _make(*args, f"PY={sys.executable}")               # then every weight file at once (shared.weights_manifest)
    assert res.returncode == 2 and "weight files missing" in res.stderr
    assert f"not found: {tmp_path / 'prompts.json'}" in res.stderr and "train_prompts_all.json" in res.stderr
