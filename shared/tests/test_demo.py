"""shared.demo: writes the twin and the contact sheet, says plainly which methods have no demo yet, runs the
ones that have one as subprocesses (a fake method here), and never imports method code."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from shared import demo


def test_demo_without_methods_writes_the_contact_sheet(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    results = demo.run(data, out, n=14, size=48, seed=0, methods=["no_such_method_xyz"])
    assert results == [{"method": "no_such_method_xyz", "status": "not implemented yet", "seconds": 0.0,
                        "summary": "", "out": ""}]
    printed = capsys.readouterr().out
    assert "no_such_method_xyz: not implemented yet" in printed and "| method | status |" in printed
    # the folder names a real DATA root has, so `make reproduce-... DATA=<data> SMOKE=1` finds every twin
    for folder in ("nih", "chexpert", "mimic-cxr-jpg", "chest-imagenome", "openi"):
        assert (data / folder / ".complete").is_file()
    assert (data / "mimic-cxr-jpg" / "testSet_SubjID.csv").is_file()   # CheXclusion's list, for ADNet's MIMIC row
    with Image.open(out / "contact_sheet.png") as im:
        sheet = np.asarray(im)
    assert sheet.shape[1] == 6 * 256 and sheet.shape[0] > 6 * 256 and sheet.std() > 20
    assert (out / "anatomy.png").is_file() and json.loads((out / "demo_summary.json").read_text())["n"] == 14
    # a second run reuses the complete twin
    demo.run(data, out, n=14, size=48, seed=0, methods=[])
    assert "reusing" in capsys.readouterr().out


def test_a_method_demo_runs_as_a_subprocess(tmp_path, monkeypatch):
    pkg = tmp_path / "fakemethod"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "demo.py").write_text(
        "import argparse, pathlib\n"
        "p = argparse.ArgumentParser(); p.add_argument('--data'); p.add_argument('--out'); a = p.parse_args()\n"
        "print('training on', a.data)\n"
        "pathlib.Path(a.out, 'summary.md').write_text('fake AUROC 0.99\\n')\n")
    broken = tmp_path / "brokenmethod"
    broken.mkdir()
    (broken / "__init__.py").write_text("")
    (broken / "demo.py").write_text("raise SystemExit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert demo.find_demo("fakemethod") == pkg / "demo.py" and "fakemethod" not in sys.modules
    data = tmp_path / "data"
    data.mkdir()
    lines = []
    ok = demo.run_method_demo("fakemethod", data, tmp_path / "out", timeout=120, log=lines.append)
    assert ok["status"] == "ok" and ok["summary"] == "fake AUROC 0.99"
    assert any("training on" in line for line in lines)
    bad = demo.run_method_demo("brokenmethod", data, tmp_path / "out", timeout=120, log=lines.append)
    assert bad["status"] == "failed (exit 3)"
    slow = tmp_path / "slowmethod"
    slow.mkdir()
    (slow / "__init__.py").write_text("")
    (slow / "demo.py").write_text("import time\ntime.sleep(60)\n")
    hung = demo.run_method_demo("slowmethod", data, tmp_path / "out", timeout=1.5, log=lines.append)
    assert hung["status"] == "timed out" and hung["seconds"] < 30


def test_a_twin_with_other_parameters_is_replaced_not_overwritten(tmp_path):
    """Regenerating with other parameters leaves no unlisted images of the old twin behind; a complete twin with the
    same parameters is reused; a folder that is not a twin is never removed."""
    root = tmp_path / "mimic"
    assert demo.fresh_twin(root, "mimic", n=12, size=48, seed=0, log=lambda *_: None)
    old = {p for p in root.rglob("*.jpg")}
    assert demo.fresh_twin(root, "mimic", n=6, size=40, seed=1, log=lambda *_: None)
    new = {p for p in root.rglob("*.jpg")}
    assert len(new) < len(old) and json.loads((root / ".complete").read_text())["n"] == 6
    assert not demo.fresh_twin(root, "mimic", n=6, size=40, seed=1, log=lambda *_: None)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("user file")
    demo.fresh_twin(mine, "nih", n=6, size=40, seed=0, log=lambda *_: None)
    assert (mine / "keep.txt").read_text() == "user file"


def test_a_second_demo_reruns_from_scratch_and_the_table_is_whole(tmp_path, monkeypatch):
    pkg = tmp_path / "countmethod"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    long_headline = "AUROC " + "x" * 150
    (pkg / "demo.py").write_text(
        "import argparse, pathlib\n"
        "p = argparse.ArgumentParser(); p.add_argument('--data'); p.add_argument('--out'); a = p.parse_args()\n"
        "out = pathlib.Path(a.out); runs = len(list(out.glob('run*')))\n"
        "(out / f'run{runs}').write_text(''); (out / 'roc.png').write_bytes(b'')\n"
        f"(out / 'summary.md').write_text('{long_headline} runs=' + str(runs) + '\\n')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    for _ in range(2):
        lines = []
        r = demo.run_method_demo("countmethod", data, out, timeout=120, log=lines.append)
        assert r["summary"].endswith("runs=0")   # the earlier run's files were gone: a rerun, not a resume
    table = demo.closing_table([r], [out / "contact_sheet.png"])
    assert f"{long_headline} runs=0" in table                      # not cut at 100 characters
    tail = table.splitlines()[table.splitlines().index("Pictures and pages:"):]
    assert str(out / "contact_sheet.png") in tail[1] and any(str(out / "countmethod" / "roc.png") in t for t in tail)
