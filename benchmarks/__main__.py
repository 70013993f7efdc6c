"""Run every benchmark module in this package: ``python -m benchmarks [--only loader] [-- extra args]``."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path


# modules of this package that are tools, not benchmarks: the GPU check runs the benchmarks itself
NOT_BENCHMARKS = ("tests", "gpu_check", "reproduce_time")


def discover() -> list[str]:
    """Names of the benchmark modules (every module of this package with a ``main``, except ``__main__``)."""
    names = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.ispkg or info.name.startswith("_") or info.name in NOT_BENCHMARKS:
            continue
        names.append(info.name)
    return sorted(names)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--only", nargs="*", default=None, help="benchmark names to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to every benchmark after --")
    a = p.parse_args(argv)
    names = discover()
    if a.list:
        print("\n".join(names))
        return 0
    selected = names if not a.only else [n for n in names if n in a.only]
    unknown = sorted(set(a.only or []) - set(names))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; known: {names}")
    rest = [x for x in a.rest if x != "--"]
    failed = []
    for name in selected:
        mod = importlib.import_module(f"benchmarks.{name}")
        if not hasattr(mod, "main"):
            continue
        print(f"=== benchmarks.{name}", flush=True)
        t = time.perf_counter()
        try:
            mod.main(rest)
        except Exception as exc:   # one broken benchmark does not hide the others' numbers
            print(f"benchmarks.{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
        print(f"=== benchmarks.{name} done in {time.perf_counter() - t:.0f} s\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
