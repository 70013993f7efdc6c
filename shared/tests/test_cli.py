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


def test_absolute_path_args_rewrites_what_exists_here(tmp_path):
    from shared.cli import REPO_ROOT, absolute_path_args
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "x.yaml").write_text("a: 1\n")
    (tmp_path / "w.pt").write_bytes(b"")
    argv = ["-cfg", "configs/x.yaml", "--weights=w.pt", "--run", "w.pt", "--set", "engine.epochs=2",
            "data.root=configs", "--out", "new_dir", "--device", "cpu", "--config", "typo.yaml",
            "-cfg", "ham/configs/demo.yaml", str(tmp_path / "w.pt")]
    out = absolute_path_args(argv, tmp_path)
    assert out[:5] == ["-cfg", str(tmp_path / "configs/x.yaml"), f"--weights={tmp_path / 'w.pt'}", "--run",
                       str(tmp_path / "w.pt")]
    assert out[5:12] == ["--set", "engine.epochs=2", "data.root=configs", "--out", "new_dir", "--device", "cpu"]
    assert out[12:14] == ["--config", str(tmp_path / "typo.yaml")]       # a missing config: named where you are
    assert out[14:16] == ["-cfg", "ham/configs/demo.yaml"]                 # exists only under the root: kept
    assert out[16] == str(tmp_path / "w.pt")
    assert (REPO_ROOT / "ham/configs/demo.yaml").exists()


def test_script_mode_runs_as_from_the_repo_root():
    """`cd ham && python train.py -cfg configs/demo.yaml` reads the config where you are, then works from the root
    (the config's data paths and runs/ are relative to it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CXR_TRACEBACK", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "train.py", "-cfg", "configs/demo.yaml", "--help"], cwd=REPO / "ham",
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "-cfg" in proc.stdout
    probe = ("import os, sys; sys.argv = ['x', '-cfg', 'configs/demo.yaml', '--out', 'o'];"
             "from shared.cli import run_from_repo_root; run_from_repo_root('__main__');"
             "print(os.getcwd()); print(sys.argv[2]); print(sys.argv[4])")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO / "ham", env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(REPO), str(REPO / "ham/configs/demo.yaml"), "o"]


def test_script_mode_reports_a_bad_config_key_from_the_method_folder():
    env = {k: v for k, v in os.environ.items() if k not in ("CXR_TRACEBACK", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "train.py", "-cfg", "configs/demo.yaml", "--set", "no.such=1"],
                          cwd=REPO / "ham", env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "no.such" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("method, schema", [("adnet", "adnet.config:ADNetConfig"), ("ham", "ham.config:HAMConfig"),
                                            ("agcnn", "agcnn.config:Config"),
                                            ("chextriev", "chextriev.config:ChextrievConfig"),
                                            ("cxrclip", "cxrclip.config:TrainConfig")])
def test_train_help_set_example_is_valid_for_the_method(method, schema, capsys):
    """The `--set` example of each train CLI's --help names keys its own config has (not train.epochs for all)."""
    import importlib
    import re

    from shared.config import load_config
    train = importlib.import_module(f"{method}.train")
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    items = re.search(r"e\.g\. --set ((?:\S+=\S+ ?)+)", text).group(1).split()
    module, name = schema.split(":")
    load_config(getattr(importlib.import_module(module), name), REPO / method / "configs" / "demo.yaml", items)


def test_agcnn_names_the_stage_epochs_instead_of_ignoring_engine_epochs(capsys):
    from agcnn.train import main
    with pytest.raises(SystemExit):
        main(["-cfg", str(REPO / "agcnn/configs/demo.yaml"), "--set", "engine.epochs=1"])
    err = capsys.readouterr().err
    assert "engine.epochs" in err and "train.global_stage.epochs" in err


def test_a_failed_cxrclip_train_leaves_no_empty_run_folder(tmp_path):
    from shared.data import DataError
    from cxrclip import train
    with pytest.raises((DataError, FileNotFoundError, ValueError)):
        train.main(["-cfg", str(REPO / "cxrclip/configs/demo.yaml"), "--set",
                    f"data.sources.0.root={tmp_path / 'absent'}", f"output_root={tmp_path / 'runs'}"])
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.name != "demo" and p.name != "cxrclip"]


def test_disk_errors_and_non_finite_loss_are_user_errors_bugs_are_not(capsys):
    import errno

    from shared.engine import NonFiniteLossError
    for err in (OSError(errno.ENOSPC, "No space left on device", "/runs/x/last.pt"),
                PermissionError(errno.EACCES, "Permission denied", "/runs"),
                OSError(errno.EROFS, "Read-only file system", "/mnt/ro")):
        assert run_cli("prog", lambda: (_ for _ in ()).throw(err)) == 2
        line = capsys.readouterr().err
        assert line.count("\n") == 1 and err.filename in line and err.strerror in line
    assert run_cli("prog", lambda: (_ for _ in ()).throw(NonFiniteLossError("non-finite loss (nan)\nat step 3"))) == 2
    assert capsys.readouterr().err == "prog: error: non-finite loss (nan) at step 3\n"   # always one line
    with pytest.raises(OSError):   # an OSError that is not the user's disk (e.g. a broken socket) is a bug
        run_cli("prog", lambda: (_ for _ in ()).throw(OSError(errno.ECONNRESET, "reset")))


def test_the_error_line_goes_into_the_log_of_the_run_the_command_opened(tmp_path, capsys):
    from shared.engine import RunLogger

    def action():
        RunLogger(tmp_path / "run").info("started")
        raise ValueError("the validation split has no images")
    assert run_cli("python -m x.train", action) == 2
    log = (tmp_path / "run" / "log.txt").read_text().splitlines()
    assert log[-1].endswith("python -m x.train: error: the validation split has no images")
    assert run_cli("python -m x.test", lambda: (_ for _ in ()).throw(ValueError("other"))) == 2
    assert "other" not in (tmp_path / "run" / "log.txt").read_text()   # a later command without a run: no log


def test_debug_flag_shows_the_traceback_and_bugs_exit_1(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CXR_TRACEBACK"}
    argv = [sys.executable, "-m", "ham.test", "-cfg", "ham/configs/demo.yaml", "-w", str(tmp_path / "absent.pt"),
            "--set", f"data.root={tmp_path}"]
    plain = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = subprocess.run(argv + ["--debug"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    bug = subprocess.run([sys.executable, "-c", "from shared.cli import cli_exit; cli_exit('p', lambda: 1 / 0)"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bug.returncode == 1 and "ZeroDivisionError" in bug.stderr
