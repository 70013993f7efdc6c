"""End to end on the synthetic NIH twin: ham.demo (train -> test -> attention page -> report) learns AND localises.

The localisation bar is a centred-blob baseline scored through the same evaluation code (``ham.evaluation.localize``
with the same threshold, GT masks and ``LocalizationMeter``): the best centred square over nine sizes, chosen on the
test boxes themselves, so the strongest "predict the middle" answer.
"""
import json
import re

import cv2
import pytest
import torch

from shared.config import load_config
from shared.engine import make_loader

from ham.config import HAMConfig
from ham.demo import run_demo
from ham.evaluation import localize
from ham.model import HAMOutput
from ham.train import eval_sets, prepare_data

BLOB_SIDES = [k / 10 for k in range(1, 10)]     # centred square, side as a fraction of the image side


class CentredBlob(torch.nn.Module):
    """A 'model' whose disease attention is a centred square for every class (refined maps in {0, 1})."""

    def __init__(self, num_classes: int, side: float):
        super().__init__()
        self.num_classes, self.side = num_classes, side

    def forward(self, x, refine=True):
        b, _, h, w = x.shape
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        half = self.side * h / 2
        blob = (((ys - (h - 1) / 2).abs() <= half) & ((xs - (w - 1) / 2).abs() <= half)).float()
        refined = blob.expand(b, self.num_classes, h, w)
        return HAMOutput(None, None, None, refined, None, None)


def centred_blob_tiou01(run_dir) -> tuple[float, float]:
    """(best mean T(IoU@0.1) of a centred square over BLOB_SIDES, its side) on the run's test box images."""
    cfg = load_config(HAMConfig, run_dir / "config.yaml")
    classes, boxes, splits = prepare_data(cfg)
    _, loc_set = eval_sets(cfg, splits.test, splits.test_box_ids, classes, boxes)
    best = (-1.0, None)
    for side in BLOB_SIDES:
        loader = make_loader(loc_set, 32, shuffle=False, train=False, num_workers=0)
        meter = localize(CentredBlob(len(classes), side), loader, torch.device("cpu"), classes,
                         cfg.eval.loc_threshold)
        t_iou, _ = meter.tables()
        best = max(best, (float(t_iou.loc["mean", "0.1"]), side), key=lambda v: v[0])
    return best


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ham_e2e")
    # engine.visdom on with no server (or no visdom package): training must go on regardless
    return run_demo(root / "data", root / "run", ["engine.visdom=true"])


@pytest.mark.slow
def test_learns_and_localises_on_the_twin(demo_run):
    assert demo_run["auroc"]["mean"] > 0.6, demo_run["auroc"]
    blob, side = centred_blob_tiou01(demo_run["run_dir"])
    ours = float(demo_run["t_iou"].loc["mean", "0.1"])
    assert ours >= blob + 0.05, f"T(IoU@0.1) {ours:.3f} vs best centred blob {blob:.3f} (side {side})"


@pytest.mark.slow
def test_test_cli_prints_and_writes_the_tables(demo_run, capsys):
    run_dir = demo_run["run_dir"]
    for name in ("test_auroc.csv", "test_tiou.csv", "test_tiobb.csv", "roc.png", "report.md"):
        assert (run_dir / name).is_file(), name
    tiou = (run_dir / "test_tiou.csv").read_text().splitlines()
    assert tiou[0] == "class,0.1,0.2,0.3,0.4,0.5,0.6,0.7" and tiou[-1].startswith("mean,")
    assert (run_dir / "test_tiobb.csv").read_text().splitlines()[0] == "class,0.1,0.25,0.5,0.75,0.9"
    assert "Atelectasis" in (run_dir / "test_auroc.csv").read_text()
    log = (run_dir / "test_log.txt").read_text()
    assert re.search(r"^Test-Cls: Mean AUC 0\.\d{4}$", log, re.M)
    assert re.search(r"^Test-TIoU: mean\{(\d\.\d{4},){6}\d\.\d{4}\}$", log, re.M)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["metrics"]["auroc"]["mean"] == pytest.approx(demo_run["auroc"]["mean"])
    assert results["config"] == "demo"   # the config's name, not the run folder's parent
    assert "checkpoint selected on the test split (faithful to the original)" in results["notes"]
    # visdom was asked for without a server: a warning, and training still finished
    train_log = (run_dir / "log.txt").read_text()
    assert "visdom" in train_log and "continuing without it" in train_log
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    # the original's three best checkpoints: T(IoU) / T(IoBB) tables read from the ones of their metric
    assert (run_dir / "checkpoints" / "best_tiou.pt").is_file() and (run_dir / "checkpoints" / "best_tiobb.pt").is_file()
    assert any("T(IoU) from" in note and "best_tiou.pt" in note for note in results["notes"])


@pytest.mark.slow
def test_test_cli_evaluates_a_file_in_the_authors_layout(demo_run, tmp_path, capsys):
    """ham.test -w with our best weights saved as the authors saved theirs (module.model.*): same AUROC."""
    from ham.checkpoint import ours_to_original
    from ham.test import main as ham_test
    from shared.engine import load_checkpoint, weights_from_checkpoint
    run_dir = demo_run["run_dir"]
    weights = weights_from_checkpoint(load_checkpoint(run_dir / "checkpoints" / "best.pt"))
    path = tmp_path / "resnet18_best_auc.pth"
    torch.save({f"module.{k}": v for k, v in ours_to_original(weights).items()}, path)
    out = ham_test(["-cfg", str(run_dir / "config.yaml"), "-w", str(path), "--out", str(tmp_path / "eval")])
    assert "authors' released layout" in capsys.readouterr().out
    assert out["auroc"]["mean"] == pytest.approx(demo_run["auroc"]["mean"], abs=1e-6)


@pytest.mark.slow
def test_attention_page_with_overlays(demo_run):
    page = demo_run["page"]
    text = page.read_text()
    for column in ("GT boxes", "mask overlay", "anomaly overlay", "disease overlay"):
        assert f"<th>{column}</th>" in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    rows = text.count("IoU=")
    assert rows > 0 and len(srcs) == 8 * rows
    size = load_config(HAMConfig, demo_run["run_dir"] / "config.yaml").data.img_size
    for src in srcs:
        img = cv2.imread(str(page.parent / src))
        assert img is not None and img.shape == (size, size, 3), src
    # an overlay is 0.65 image + 0.35 colour: it differs from the input next to it
    first_input, first_overlay = (cv2.imread(str(page.parent / s)).astype(int) for s in (srcs[0], srcs[7]))
    assert abs(first_input - first_overlay).mean() > 1
