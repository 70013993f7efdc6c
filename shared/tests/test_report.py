"""shared.report: results.json, published.yaml, the comparison table, report.md + PNG, RESULTS.md."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from shared import report
from shared.report import NOT_AVAILABLE, compare, load_published, write_results


@pytest.fixture()
def repo(tmp_path):
    """A fake repo root with adnet/published.yaml and a second method whose table is not transcribed."""
    (tmp_path / "adnet").mkdir()
    (tmp_path / "adnet" / "published.yaml").write_text(yaml.safe_dump({
        "_paper": "Kang et al. 2024",
        "IN1K-NIH-R50": {"source": "ADNet README", "scale": 100, "scales": {"mean_rank": 1},
                         "metrics": {"auroc": {"Atelectasis": 80.0, "mean": 83.5}, "mean_rank": 12,
                                     "f1": {"mean": None}}}}))
    (tmp_path / "ham").mkdir()
    (tmp_path / "ham" / "published.yaml").write_text(
        "HAM-NIH-cls:\n  source: Ouyang et al. 2021, Table II\n  status: not yet transcribed\n")
    return tmp_path


def make_run(runs, method, config, stamp, metrics, key, notes=()):
    run = runs / method / config / stamp
    write_results(run, method, config, metrics, published_key=key, notes=notes)
    return run


def test_write_results_format(tmp_path):
    df = pd.DataFrame({"mAP": [0.5, np.nan]}, index=["a", "Class Average"])
    path = write_results(tmp_path / "r", "chextriev", "resnet50", {
        "auroc": {"A": np.float32(0.75), "mean": np.nan}, "top": df, "n": np.int64(3)},
        published_key="K", notes="one note", headline=["auroc/mean"])
    data = json.loads(path.read_text())
    assert data == {"method": "chextriev", "config": "resnet50", "published_key": "K",
                    "metrics": {"auroc": {"A": 0.75, "mean": None}, "top": {"mAP": {"a": 0.5, "Class Average": None}},
                                "n": 3},
                    "notes": ["one note"], "headline": [["auroc", "mean"]]}
    assert not list((tmp_path / "r").glob(".*tmp"))
    write_results(tmp_path / "t", "chextriev", "resnet50", df)          # one table as the whole metrics
    assert json.loads((tmp_path / "t" / "results.json").read_text())["metrics"] == {
        "mAP": {"a": 0.5, "Class Average": None}}
    with pytest.raises(TypeError, match="auroc/A"):
        write_results(tmp_path / "r", "m", "c", {"auroc": {"A": "high"}})
    with pytest.raises(TypeError, match="config"):
        write_results(tmp_path / "r", "m", {"lr": 1}, {"a": 1.0})


def test_compare_scale_delta_and_missing(repo):
    results = {"method": "adnet", "config": "nih_r50", "published_key": "IN1K-NIH-R50",
               "metrics": {"auroc": {"Atelectasis": 0.81, "Cardiomegaly": 0.9, "Hernia": None, "mean": 0.838},
                           "mean_rank": 10.0, "f1": {"mean": 0.2}}}
    pub = load_published(repo / "adnet")
    df = compare(results, pub)                       # whole file: picks the entry by published_key
    assert df.loc[("auroc", "mean"), "published"] == pytest.approx(0.835)
    assert df.loc[("auroc", "mean"), "delta"] == pytest.approx(0.003)
    assert df.loc[("auroc", "Atelectasis"), "delta"] == pytest.approx(0.01)
    assert df.loc[("mean_rank", ""), "published"] == 12 and df.loc[("mean_rank", ""), "delta"] == -2
    assert df.loc[("auroc", "Cardiomegaly"), "published"] == NOT_AVAILABLE
    assert df.loc[("auroc", "Cardiomegaly"), "delta"] == NOT_AVAILABLE
    assert np.isnan(df.loc[("auroc", "Hernia"), "ours"]) and df.loc[("auroc", "Hernia"), "delta"] == NOT_AVAILABLE
    assert df.loc[("f1", "mean"), "published"] == NOT_AVAILABLE          # published as null
    # a published row we did not produce
    less = dict(results, metrics={"auroc": {"mean": 0.8}})
    df2 = compare(less, pub["IN1K-NIH-R50"])
    assert df2.loc[("auroc", "Atelectasis"), "ours"] == NOT_AVAILABLE
    # ... sits with its metric, not after every metric we produced
    df3 = compare(dict(results, metrics={"auroc": {"mean": 0.8}, "mean_rank": 11}), pub["IN1K-NIH-R50"])
    assert list(df3.index) == [("auroc", "mean"), ("auroc", "Atelectasis"), ("mean_rank", ""), ("f1", "mean")]
    assert compare(results, None)["published"].eq(NOT_AVAILABLE).all()


def test_load_published_errors(tmp_path):
    bad = tmp_path / "published.yaml"
    bad.write_text("K:\n  scale: 100\n  metrics: {auroc: {mean: 80}}\n")
    with pytest.raises(ValueError, match="'K' has no 'source'"):
        load_published(bad)
    bad.write_text("K:\n  source: x\n  metrics: {auroc: {mean: high}}\n")
    with pytest.raises(ValueError, match="auroc/mean"):
        load_published(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_published(tmp_path / "nope.yaml")


def test_report_run_cli(repo, tmp_path, capsys):
    runs = tmp_path / "runs"
    run = make_run(runs, "adnet", "nih_r50", "20261121-230000",
                   {"auroc": {"Atelectasis": 0.81, "Cardiomegaly": 0.9, "mean": 0.838}}, "IN1K-NIH-R50",
                   notes=["checkpoint selected on the test split (faithful)"])
    assert report.main([str(run), "--repo-root", str(repo)]) == 0
    printed = capsys.readouterr().out
    text = (run / "report.md").read_text()
    assert printed == text
    assert "| auroc | mean | 0.838 | 0.835 | +0.003 |" in text
    assert "| auroc | Cardiomegaly | 0.900 | not available | not available |" in text
    assert "| mean_rank |  | not available | 12.000 | not available |" in text
    assert "source: ADNet README" in text and "checkpoint selected on the test split" in text
    assert "![ours vs published](report.png)" in text
    png = (run / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    # not yet transcribed, and a method without any published.yaml
    run2 = make_run(runs, "ham", "nih_cls", "20261121-230000", {"auroc": {"mean": 0.84}}, "HAM-NIH-cls")
    text2 = report.report_run(run2, root=repo, plot=False)
    assert "| auroc | mean | 0.840 | not yet transcribed | not available |" in text2
    assert not (run2 / "report.png").exists()
    run3 = make_run(runs, "agcnn", "nih", "20261121-230000", {"auroc": {"mean": 0.8}}, "X")
    text3 = report.report_run(run3, root=repo, plot=False)
    assert "no published table for method 'agcnn'" in text3 and "| 0.800 | not available |" in text3
    assert report.main([str(tmp_path / "missing"), "--repo-root", str(repo)]) == 2
    with pytest.raises(SystemExit):
        report.main([])
    with pytest.raises(SystemExit):
        report.main([str(run), "--out", "x.md"])


def test_aggregate_all(repo, tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "adnet", "nih_r50", "20261121-230000", {"auroc": {"Atelectasis": 0.7, "mean": 0.800}},
             "IN1K-NIH-R50")
    make_run(runs, "adnet", "nih_r50", "20261122-010000", {"auroc": {"Atelectasis": 0.8, "mean": 0.845}},
             "IN1K-NIH-R50")
    make_run(runs, "ham", "nih_cls", "20261121-230000", {"auroc": {"mean": 0.84, "A": 0.8}}, "HAM-NIH-cls")
    (runs / "adnet" / "nih_r50" / "unfinished").mkdir()           # no results.json: ignored
    out = tmp_path / "RESULTS.md"
    assert report.main(["--all", str(runs), "--out", str(out), "--repo-root", str(repo)]) == 0
    text = out.read_text()
    assert text.index("## adnet / nih_r50") < text.index("## ham / nih_cls")
    assert "| auroc | mean | 0.845 | 0.835 | +0.010 |" in text and "0.800" not in text
    assert "latest of 2 runs" in text
    assert "Atelectasis" not in text                                # headline rows only
    assert "| auroc | mean | 0.840 | not yet transcribed | not available |" in text
    assert "No finished runs" in report.aggregate(tmp_path / "empty")


def test_report_png_draws_published_bars_only_where_a_number_exists():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (some, none) = plt.subplots(2, 1)
    report.draw_comparison_panel(some, "auroc", [("Mass", 0.8, 0.82), ("Hernia", 0.7, float("nan"))])
    report.draw_comparison_panel(none, "iou", [("Mass", 0.3, "not available"), ("Nodule", 0.2, None)])
    bars = lambda ax, lab: [b for c in ax.containers if c.get_label() == lab for b in c]  # noqa: E731
    assert len(bars(some, "ours")) == 2 and [b.get_height() for b in bars(some, "published")] == [0.82]
    assert [t.get_text() for t in some.texts] == ["not available"]           # beside Hernia, no zero-height bar
    assert bars(none, "published") == [] and none.get_title() == "iou  (published: not available)"
    assert some.get_title() == "auroc"
    plt.close(fig)


def test_roc_curves_of_14_classes_differ_in_colour_and_line_style(tmp_path):
    from shared.plots import curve_styles, roc_plot
    styles = curve_styles(14)
    assert len({(s["color"], s["linestyle"]) for s in styles}) == 14
    assert len({s["linestyle"] for s in styles}) >= 3          # tells curves apart in grey print too
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (60, 14))
    y[:, 3] = 0                                                 # a class with one label has no curve, no crash
    path = roc_plot(y, y + rng.random((60, 14)), [f"c{i}" for i in range(14)], tmp_path / "roc.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

def test_report_cli_finds_a_root_relative_run_path_from_a_method_folder(repo, tmp_path, monkeypatch):
    """`cd ham && python train.py` prints runs/... relative to the repository root; the report finds it from ham/."""
    clone = tmp_path / "clone"
    run = make_run(clone / "runs", "ham", "nih_cls", "20261121-230000", {"auroc": {"mean": 0.84}}, "HAM-NIH-cls")
    (clone / "ham").mkdir()
    monkeypatch.setattr(report, "repo_root", lambda: clone)
    monkeypatch.chdir(clone / "ham")
    printed = str(run.relative_to(clone))
    assert report.main([printed, "--repo-root", str(repo), "--no-plot"]) == 0
    assert (run / "report.md").exists()
    assert report.main(["runs/ham/missing", "--repo-root", str(repo)]) == 2
