"""Command-line entry points: bad input ends in one line that names it, not in a traceback.

    if __name__ == "__main__":
        cli_exit("python -m ham.train", main)

``main()`` itself still raises (tests and notebooks see the exception); only the command line turns the errors a
user can fix — a missing file, a bad config key or value, a data-layout problem or an undecodable image
(:class:`DataError` and :class:`ConfigError` are ``ValueError``\\ s), a checkpoint that is missing, corrupt or does
not fit, an unwritable or full disk, a non-finite loss — into one line ``<prog>: error: <what>, <which file/key>,
<what to do>`` on stderr and exit status 2, as argparse does for a bad flag. The same line is appended to the
``log.txt`` of the run the command opened, so the run records why it stopped. Anything else is a bug: exit status 1
with its traceback. ``--debug`` (or ``CXR_TRACEBACK=1``) shows the traceback of a user error too.

Train, then test: every ``<method>.train`` ends with :func:`test_after_training` -- on the main process, the
method's own ``<method>.test --run RUN`` (its ``main``, so exactly what that command does) and
``python -m shared.report RUN`` -- unless ``--no-test`` (:func:`add_no_test_flag`) is given.

Script mode (``cd ham && python train.py -cfg configs/demo.yaml``) behaves exactly like running from the repository
root: each CLI's header calls :func:`run_from_repo_root`, which makes the path arguments you typed absolute and then
changes to the root, so the configs' data paths and the default ``runs/`` resolve as they do from the root.
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from .data.images import ImageReadError
from .engine.checkpoint import CheckpointError
from .engine.distributed import barrier, destroy_distributed, is_main_process
from .engine.logger import append_to_run_log, forget_run_log
from .engine.trainer import NonFiniteLossError

REPO_ROOT = Path(__file__).resolve().parent.parent
# Options whose value is a path even when it does not exist yet where you are (a mistyped config is then reported
# under the name you meant, not under the repository root).
CONFIG_OPTIONS = frozenset({"-cfg", "--config"})

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, CheckpointError,
                                                 NonFiniteLossError, ImageReadError)
# OSErrors a user fixes on their side: a full disk or quota, a read-only or forbidden folder.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
DEBUG_FLAG = "--debug"


def user_error_message(err: BaseException, errors: tuple[type[BaseException], ...] = USER_ERRORS) -> str | None:
    """The one-line message of a user-fixable error, or None for a bug (which keeps its traceback)."""
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError) and err.errno in DISK_ERRNOS:
        where = f" {err.filename}" if err.filename else ""
        return (f"cannot write{where} ({err.strerror}): free space on that disk or choose a writable folder "
                "(the config's runs root / --out)")
    if not isinstance(err, errors):
        return None
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)   # KeyError quotes its message
    return " ".join(line.strip() for line in message.splitlines() if line.strip())   # one line, always


def run_cli(prog: str, action: Callable[[], object], errors: tuple[type[BaseException], ...] = USER_ERRORS) -> int:
    """Run ``action``; a user-fixable error -> one line on stderr (and in the run's log.txt) and 2, success -> 0
    (or the int it returns). A bug propagates with its traceback (exit status 1)."""
    forget_run_log()
    try:
        result = action()
    except Exception as err:
        message = user_error_message(err, errors)
        if message is None or os.environ.get("CXR_TRACEBACK"):
            raise
        line = f"{prog}: error: {message}"
        print(line, file=sys.stderr)
        append_to_run_log(line)
        return 2
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def cli_exit(prog: str, main: Callable[[], object]) -> NoReturn:
    """``sys.exit(run_cli(prog, main))``; ``--debug`` anywhere on the command line shows tracebacks instead."""
    if DEBUG_FLAG in sys.argv[1:]:
        sys.argv.remove(DEBUG_FLAG)
        os.environ["CXR_TRACEBACK"] = "1"
    sys.exit(run_cli(prog, main))


def absolute_path_args(argv: Sequence[str], cwd: str | Path) -> list[str]:
    """``argv`` with each relative path that exists under ``cwd`` made absolute (``--opt=PATH`` included).

    The value of ``-cfg``/``--config`` is made absolute against ``cwd`` unless it exists only relative to the
    repository root. Everything else is left alone: options, ``--set key=value`` items, and paths that do not exist
    under ``cwd`` (outputs such as ``--out new_dir``) -- those resolve against the repository root, as from there.
    """
    cwd = Path(cwd).resolve()

    def absolute(item: str, config: bool = False) -> str:
        if not item or item.startswith("-") or Path(item).is_absolute():
            return item
        here = cwd / item
        if here.exists() or (config and not (REPO_ROOT / item).exists()):
            return str(here)
        return item

    out: list[str] = []
    after_config = False
    for item in argv:
        if after_config:
            out.append(absolute(item, config=True))
        elif item.startswith("-") and "=" in item:
            option, value = item.split("=", 1)
            out.append(f"{option}={absolute(value, config=option in CONFIG_OPTIONS)}")
        else:
            out.append(absolute(item))
        after_config = item in CONFIG_OPTIONS
    return out


def run_from_repo_root(module_name: str) -> None:
    """Script mode (``cd ham && python train.py ...``): run as if started from the repository root.

    Called from a CLI's ``if __package__ in (None, ""):`` header with its ``__name__``; does nothing unless that is
    ``"__main__"``. Rewrites ``sys.argv`` with :func:`absolute_path_args`, then changes to the root.
    """
    if module_name != "__main__":
        return
    sys.argv[1:] = absolute_path_args(sys.argv[1:], Path.cwd())
    os.chdir(REPO_ROOT)


def add_no_test_flag(parser):
    """The ``--no-test`` flag of every ``<method>.train`` (read by :func:`test_after_training`)."""
    parser.add_argument("--no-test", action="store_true",
                        help="train only: skip testing the best checkpoint and writing report.md afterwards "
                             "(later: python -m <method>.test --run RUN, then python -m shared.report RUN)")
    return parser


def test_after_training(method: str, run_dir: str | Path, no_test: bool, test_main: Callable[[list[str]], object],
                        more: Sequence[str] = ()) -> None:
    """What every ``<method>.train`` does after training: ``python -m <method>.test --run RUN`` (``test_main`` is
    that CLI's ``main``), then ``python -m shared.report RUN``, then where the results are (and the ``more``
    lines: further commands for this run). ``no_test`` (``--no-test``) prints the commands instead.

    Under torchrun every rank leaves the process group first and only rank 0 tests, as one process: the test
    CLIs' loaders would otherwise shard the test split over ranks that are gone. A test or report that fails
    ends the command with its exit status (its error line is already printed).
    """
    from . import report   # lazily: report pulls in pandas/matplotlib, which --help and error paths never need

    run = str(run_dir)
    barrier()
    destroy_distributed()
    if not is_main_process():
        return
    if no_test:
        print(f"trained (--no-test); to test and report: python -m {method}.test --run {run} && "
              f"python -m shared.report {run}")
    else:
        for step in (lambda: test_main(["--run", run]), lambda: report.main([run])):   # the report after a test
            status = step()
            if isinstance(status, int) and not isinstance(status, bool) and status != 0:
                raise SystemExit(status)
        where = Path(run).absolute()   # absolute: script mode printed from a method folder runs in the repo root
        print(f"results: {where / 'results.json'}\nreport: {where / 'report.md'}")
    for line in more:
        print(line)
    sys.stdout.flush()
