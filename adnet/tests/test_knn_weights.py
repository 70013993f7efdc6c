"""k-NN and fine-tuning starts: which weights are loaded (any class count for k-NN; raw vs EMA by best_source)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared.config import load_config
from shared.data import synthetic

from adnet import knn as adnet_knn
from adnet.checkpoint import CheckpointKeyError, choose_ema, load_start_weights, load_weights, ours_to_original
from adnet.config import ADNetConfig
from adnet.evaluate import build_from_config, pick_variant

from .conftest import tiny_model

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"   # the tiny ConvNeXt of conftest


def _ours(model_raw, model_ema=None, best_source=None) -> dict:
    ck = {"format": 1, "model": model_raw.state_dict(), "ema": model_ema.state_dict() if model_ema else None}
    if best_source is not None:
        ck["best_source"] = best_source
    return ck


def test_embedding_loads_from_a_checkpoint_of_any_class_count():
    src = tiny_model("convnext", num_classes=21, seed=1).eval()
    dst = tiny_model("convnext", num_classes=14, seed=2)
    with pytest.raises(CheckpointKeyError, match="head.weight"):     # the plain strict load refuses, as it should
        load_weights(dst, src.state_dict())
    dst.reset_classifier(0)
    notes = load_weights(dst, src.state_dict(), ignore_head=True)
    assert "not loaded" in notes[0]
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval().forward_embedding(x), src.forward_embedding(x))


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return synthetic.generate("nih", tmp_path_factory.mktemp("nih"), n=48, size=96, seed=5)


def _knn_cfg(root, tmp_path):
    return load_config(ADNetConfig, DEMO, [f"data.nih_root={root}", f"runs_root={tmp_path / 'runs'}",
                                           "eval.knn_k=[2,4]", "eval.knn_t=[0.1,1.0]"])


def test_knn_cross_dataset_21_class_checkpoint_on_14_class_config(twin, tmp_path):
    raw, ema = tiny_model("convnext", num_classes=21, seed=1), tiny_model("convnext", num_classes=21, seed=2)
    path = tmp_path / "all21.pt"
    torch.save(_ours(raw, ema, best_source="raw"), path)
    cfg = _knn_cfg(twin, tmp_path)
    out = adnet_knn.run_knn(cfg, path, tmp_path / "knn")
    assert 0.0 <= out["metrics"]["auroc"]["mean"] <= 1.0
    assert len(out["table"]) == 15                                      # 14 NIH classes + mean
    assert (tmp_path / "knn" / "knn_metrics.md").read_text().startswith("# k-NN (raw weights)")   # best_source


def test_knn_cli_takes_the_rename_rules_of_adnet_test(twin, tmp_path, capsys):
    model = tiny_model("convnext", num_classes=21, seed=1)
    orig = ours_to_original(model.state_dict(), "convnext")
    orig["proj_out.weight"] = orig.pop("fc_layer.0.weight")            # a name our map does not know
    path = tmp_path / "convnext_ADNet_ALL.pth.tar"
    torch.save({"state_dict": orig}, path)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(f"_base_: {DEMO}\ndata: {{nih_root: {twin}}}\neval: {{knn_k: [2, 4], knn_t: [1.0]}}\n")
    args = ["-cfg", str(cfg_path), "--weights", str(path), "--run-dir", str(tmp_path / "knn"), "--grid", "same"]
    assert adnet_knn.main(args) == 2
    assert "proj_out.weight" in capsys.readouterr().err                 # the unmatched key is named
    assert adnet_knn.main(args + ["--rename", r"^proj_out\.weight$=fc_layer.0.weight"]) == 0
    assert (tmp_path / "knn" / "knn_metrics.md").is_file()


def test_pick_variant_for_knn():
    both = {"raw": {}, "ema": {}}
    assert pick_variant(both, "raw") == "raw" and pick_variant(both, "ema") == "ema"
    assert pick_variant(both, None) == "ema" and pick_variant({"raw": {}}, None) == "raw"
    assert pick_variant(both, "ema", "raw") == "raw"
    assert pick_variant({"weights": {}}, None) == "weights" == pick_variant({"weights": {}}, None, "raw")
    with pytest.raises(CheckpointKeyError, match="ema weights requested"):
        pick_variant({"raw": {}}, None, "ema")


def test_fine_tuning_starts_from_the_weights_best_pt_was_selected_on(tmp_path):
    """reproduce-adnet-all: ALL -> NIH starts from the weights that won best.pt (best_source), unless overridden."""
    raw, ema = tiny_model("convnext", num_classes=21, seed=1), tiny_model("convnext", num_classes=21, seed=2)
    assert choose_ema({"format": 1, "best_source": "raw", "ema": {}}, None)[0] is False
    assert choose_ema({"format": 1, "best_source": "ema", "ema": {}}, None)[0] is True
    assert choose_ema({"format": 1, "model": {}, "ema": {"a": 1}}, None)[0] is True     # last.pt: EMA
    assert choose_ema({"format": 1, "model": {}, "ema": None}, None)[0] is False
    assert choose_ema({"state_dict": {}}, None)[0] is False                                # released file
    assert choose_ema({"format": 1, "best_source": "raw"}, True)[0] is True               # explicit override
    assert choose_ema({"format": 1, "best_source": "ema"}, False)[0] is False

    def start(best_source, override):
        path = tmp_path / f"best_{best_source}.pt"
        torch.save(_ours(raw, ema, best_source), path)
        sets = [f"model.pretrained_path={path}"] + ([f"model.pretrained_ema={override}"] if override else [])
        cfg = load_config(ADNetConfig, DEMO, sets)
        model, notes = build_from_config(cfg, 14)
        assert model.head.weight.shape[0] == 14
        return model.decoder.state_dict(), notes

    for source, override, expected in [("raw", None, raw), ("ema", None, ema), ("raw", "true", ema),
                                       ("ema", "false", raw)]:
        got, notes = start(source, override)
        for k, v in expected.decoder.state_dict().items():
            torch.testing.assert_close(got[k], v, msg=f"{source}/{override}: {k}")
        assert (f"best_source={source!r}" in notes[0]) == (override is None), notes
    # an explicit EMA request on a checkpoint without EMA weights is a clear error
    path = tmp_path / "no_ema.pt"
    torch.save(_ours(raw), path)
    with pytest.raises(CheckpointKeyError, match="no_ema.pt.*no EMA weights"):
        load_start_weights(path, ema=True)
