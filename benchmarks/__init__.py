"""Throughput and memory benchmarks. Each module ``benchmarks/<name>.py`` with a ``main(argv)`` is one benchmark;
``python -m benchmarks`` (``make bench``) runs them all. Results are printed as ratios against a baseline measured
in the same run, and never asserted in tests (timings depend on the machine)."""
