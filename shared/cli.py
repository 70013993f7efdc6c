"""Command-line entry points: bad input ends in one line that names it, not in a traceback.

    if __name__ == "__main__":
        cli_exit("python -m ham.train", main)

``main()`` itself still raises (tests and notebooks see the exception); only the command line turns the errors a
user can fix — a missing file, a bad config key or value, a data-layout problem (:class:`DataError` and
:class:`ConfigError` are ``ValueError``\\ s), a checkpoint that does not fit — into ``<prog>: error: <message>``
on stderr and exit status 2, as argparse does for a bad flag. Set ``CXR_TRACEBACK=1`` to get the traceback.

Script mode (``cd ham && python train.py -cfg configs/demo.yaml``) behaves exactly like running from the repository
root: each CLI's header calls :func:`run_from_repo_root`, which makes the path arguments you typed absolute and then
changes to the root, so the configs' data paths and the default ``runs/`` resolve as they do from the root.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from .engine.checkpoint import CheckpointError

REPO_ROOT = Path(__file__).resolve().parent.parent
# Options whose value is a path even when it does not exist yet where you are (a mistyped config is then reported
# under the name you meant, not under the repository root).
CONFIG_OPTIONS = frozenset({"-cfg", "--config"})

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, CheckpointError)


def run_cli(prog: str, action: Callable[[], object], errors: tuple[type[BaseException], ...] = USER_ERRORS) -> int:
    """Run ``action``; a user-fixable error -> one line on stderr and 2, success -> 0 (or the int it returns)."""
    try:
        result = action()
    except errors as err:
        if os.environ.get("CXR_TRACEBACK"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err   # KeyError quotes its message
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def cli_exit(prog: str, main: Callable[[], object]) -> NoReturn:
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
