"""Command-line entry points: bad input ends in one line that names it, not in a traceback.

    if __name__ == "__main__":
        cli_exit("python -m ham.train", main)

``main()`` itself still raises (tests and notebooks see the exception); only the command line turns the errors a
user can fix — a missing file, a bad config key or value, a data-layout problem (:class:`DataError` and
:class:`ConfigError` are ``ValueError``\\ s), a checkpoint that does not fit — into ``<prog>: error: <message>``
on stderr and exit status 2, as argparse does for a bad flag. Set ``CXR_TRACEBACK=1`` to get the traceback.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn

from .engine.checkpoint import CheckpointError

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
