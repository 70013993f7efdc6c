"""Train does or does not test, the same in all five methods: ``<method>.train`` ends with what
``python -m <method>.test --run RUN`` and ``python -m shared.report RUN`` do (results.json and report.md in the run,
the same numbers), and ``--no-test`` trains only. Tiny runs of the demo configs on the fault matrix's twins."""
from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import pytest

from shared.cli import run_cli
from shared.tests.test_fault_matrix import ALL, METHODS, one_thread, twins  # noqa: F401 - fixtures by name
# The fault matrix's CheXtriev twin has 6 test images: retrieval at k <= 5.
EVAL_SETS = {"chextriev": ("eval.ks=[3,5]",)}


def cli(method: str, entry: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``python -m <method>.<entry> argv`` (run in-process as cli_exit runs it)."""
    module = importlib.import_module(f"{method}.{entry}")
    code = run_cli(f"python -m {method}.{entry}", lambda: module.main(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_directory(runs: Path) -> Path:
    """The one run under ``runs`` (the shallowest config.yaml: AG-CNN's stages keep theirs one level down)."""
    configs = sorted(runs.rglob("config.yaml"), key=lambda p: len(p.parts))
    assert configs, f"no run under {runs}"
    return configs[0].parent


def metrics_text(run: Path) -> str:
    return json.dumps(json.loads((run / "results.json").read_text())["metrics"], sort_keys=True)


@pytest.mark.parametrize("name", ALL)
def test_train_tests_and_reports_unless_no_test(name, twins, tmp_path, capsys):
    m = METHODS[name]
    assert "--no-test" in m.train_flags
    runs = tmp_path / "runs"
    m = dataclasses.replace(m, extra=m.extra + EVAL_SETS.get(name, ()))
    code, out, err = cli(name, "train", m.train_argv(twins(m.data), runs), capsys)      # --no-test: train only
    assert code == 0, err[-3000:]
    assert f"python -m {name}.test --run" in out           # says how to test it later
    run = run_directory(runs)
    assert list(run.rglob("best.pt")) and not list(runs.rglob("results.json")) and not list(runs.rglob("report.md"))

    # the same finished run without --no-test: nothing left to train, so it is tested and reported
    testing = dataclasses.replace(m, train_flags=())
    code, out, err = cli(name, "train", testing.train_argv(twins(m.data), runs, flags=("--resume", str(run))),
                         capsys)
    assert code == 0, err[-3000:]
    assert run_directory(runs) == run and (run / "report.md").is_file()
    assert f"report: {run / 'report.md'}" in out
    after_train = metrics_text(run)

    code, _, err = cli(name, "test", ["--run", str(run)], capsys)
    assert code == 0, err[-3000:]
    assert metrics_text(run) == after_train          # train's test is `test --run RUN`, number for number


def test_a_failed_test_ends_the_train_command_without_a_report(tmp_path):
    """ADNet's test CLI returns its exit status (its one error line printed): train exits with it, no report."""
    from shared.cli import test_after_training
    calls = []
    with pytest.raises(SystemExit) as stop:
        test_after_training("adnet", tmp_path, False, lambda argv: calls.append(argv) or 2)
    assert stop.value.code == 2 and calls == [["--run", str(tmp_path)]]
    assert not (tmp_path / "report.md").exists()
    test_after_training("adnet", tmp_path, True, lambda argv: calls.append(argv))    # --no-test: never called
    assert len(calls) == 1
