"""Command-line errors a user can fix end in one line and exit status 2; programming errors keep their traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli import run_cli
from shared.config import ConfigError
from shared.data import DataError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("error", [DataError("data root /x does not exist"), ConfigError("unknown key 'a.b'"),
                                   FileNotFoundError("weights.pt"), KeyError("missing keys: fc.weight")])
def test_user_errors_become_one_line_and_exit_2(error, capsys):
    def action():
        raise error
    assert run_cli("prog", action) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prog: error: ")
    assert "missing keys: fc.weight" in err if isinstance(error, KeyError) else str(error) in err
    assert "'missing keys" not in err   # a KeyError's message is not shown quoted


def test_success_and_programming_errors(monkeypatch):
    assert run_cli("prog", lambda: {"auroc": 0.8}) == 0
    assert run_cli("prog", lambda: 3) == 3
    with pytest.raises(RuntimeError):
        run_cli("prog", lambda: (_ for _ in ()).throw(RuntimeError("a bug")))
    monkeypatch.setenv("CXR_TRACEBACK", "1")
    with pytest.raises(DataError):
        run_cli("prog", lambda: (_ for _ in ()).throw(DataError("bad")))


def test_a_method_cli_names_the_missing_data_root(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CXR_TRACEBACK"}
    proc = subprocess.run([sys.executable, "-m", "ham.train", "-cfg", "ham/configs/nih_official_split.yaml",
                           "--set", f"data.root={tmp_path / 'absent'}", f"runs_root={tmp_path}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("python -m ham.train: error: data root")
    assert "Traceback" not in proc.stderr
