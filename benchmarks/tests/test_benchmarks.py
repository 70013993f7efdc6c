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


def test_gpu_check_smoke_writes_one_page_and_one_json(tmp_path):
    """`bash benchmarks/gpu_check.sh OUT --smoke` (as CI runs it): every step ran, with every method's builders."""
    import json
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), str(tmp_path), "--smoke",
                           "--budget-s", "500"], capture_output=True, text=True, timeout=560)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["smoke"] is True
    for method in ("adnet", "ham", "agcnn", "chextriev", "cxrclip"):
        step = result["train_step"][method]
        assert "error" not in step, (method, step.get("error"))
        assert step["rows"] and all(r["train_ips"] > 0 and r["eval_ips"] > 0 for r in step["rows"]), method
    assert result["agcnn_crop"]["box_agreement"] == 1.0
    assert result["agcnn_crop_deterministic"]["deterministic"] is True
    assert result["loader"]["images_per_s"]["png1024"] > 0
    page = (tmp_path / "gpu_check.md").read_text()
    assert "SMOKE RUN" in page and "## Time to reproduce" in page and "| adnet | nih_convnext |" in page
    assert sorted(r["configs"][0] for s in result["train_step"].values() for r in s["rows"]) == \
        ["nih_convnext", "nih_loc_fold1", "nih_resnet50", "nih_resnet50", "nih_resnet50", "r50_m", "v6", "v6"]


def test_reproduce_time_adds_phases_and_scales_to_a_3090():
    from benchmarks.reproduce_time import WORKLOADS, time_rows
    work = WORKLOADS[("agcnn", "nih_resnet50")]
    rows = [{"configs": ["nih_resnet50"], "phase": p, "train_ips": ips, "eval_ips": 2 * ips, "error": ""}
            for p, ips in (("stage1_global", 1000.0), ("stage2_local", 500.0))]
    result = {"machine": {"gpu": "NVIDIA H200"}, "train_step": {"agcnn": {"rows": rows}}}
    (row,) = time_rows(result)
    expected = sum(work.train * work.epochs / ips + work.evaluated / (2 * ips) for ips in (1000.0, 500.0)) / 3600
    assert abs(row["hours"] - expected) < 1e-9
    low, high = row["rtx3090_hours"]
    assert abs(low / expected - 4.8e12 / 936e9) < 1e-9 and abs(high / expected - 989 / 71) < 1e-9
    result["machine"]["gpu"] = "NVIDIA A100"   # no spec-sheet ratio known: no 3090 column rather than a guess
    assert time_rows(result)[0]["rtx3090_hours"] is None
