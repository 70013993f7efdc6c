"""The benchmarks run (tiny sizes; nothing about speed is asserted)."""
from __future__ import annotations

from benchmarks import __main__ as runner
from benchmarks import loader


def test_discovers_the_loader_benchmark():
    assert "loader" in runner.discover()


def test_loader_benchmark_runs_tiny(tmp_path):
    result = loader.main(["--n", "6", "--size", "64", "--workers", "0", "--epochs", "1", "--batch", "4",
                          "--data", str(tmp_path), "--variants", "png1024", "png256", "cache256"])
    assert set(result["images_per_s"]) == {"png1024", "png256", "cache256"}
    assert all(r > 0 for r in result["images_per_s"].values())
    assert result["ratio_vs_png1024"]["png1024"] == 1.0
    assert (tmp_path / "loader.json").is_file()


def test_retrieval_benchmark_runs_tiny_and_its_baseline_agrees():
    from benchmarks import retrieval
    result = retrieval.main(["--n", "60", "--classes", "3", "--k", "5", "--dim", "8", "--reps", "1"])
    assert set(result["ms"]) == {"retrieval_metrics", "per_query_loop", "knn_search"}
    assert result["speedup_vs_loop"] > 0
