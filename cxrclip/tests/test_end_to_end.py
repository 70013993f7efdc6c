"""CXR-CLIP on the synthetic MIMIC twin: it learns, zero-shot beats chance, and the CLIs behave."""
from __future__ import annotations

import json

import pytest

from cxrclip import inference, test, train
from shared.data import synthetic

TINY = ["model.text.bert.hidden_size=32", "model.text.bert.num_hidden_layers=1", "model.projection_dim=32",
        "data.image_size=48", "data.max_length=48"]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return synthetic.generate("mimic", tmp_path_factory.mktemp("twin") / "mimic", n=240, size=48, seed=1)


@pytest.fixture(scope="module")
def trained(twin, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    run_dir = train.main(["-cfg", "cxrclip/configs/demo.yaml", "--set", f"data.sources.0.root={twin}",
                          f"eval.retrieval_root={twin}", f"eval.zeroshot_root={twin}", f"output_root={runs}",
                          "engine.epochs=6", *TINY])
    return run_dir


@pytest.mark.slow
def test_learns_zero_shot_and_retrieval_above_chance(trained):
    metrics = test.main(["--run", str(trained)])
    assert metrics["zeroshot_auroc"]["mean"] > 0.6
    n_texts = json.loads((trained / "results.json").read_text())["metrics"]["retrieval_i2t"]
    assert n_texts["mean_rank"] > 0
    assert (trained / "report.md").is_file() and (trained / "checkpoints" / "best.pt").is_file()


@pytest.mark.slow
def test_inference_ranks_every_label(trained, twin, capsys, tmp_path):
    image = next((twin / "files").rglob("*.jpg"))
    labels = tmp_path / "labels.txt"
    labels.write_text("Pleural Effusion\nCardiomegaly\nPneumothorax\n")
    ranked = inference.main(["--run", str(trained), "--image", str(image), "--labels", str(labels), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in printed] == [label for label, _ in ranked]
    assert sorted(r["label"] for r in printed) == ["Cardiomegaly", "Pleural Effusion", "Pneumothorax"]
    sims = [r["similarity"] for r in printed]
    assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 for s in sims)


def test_missing_data_and_bad_config_are_clear(tmp_path, capsys):
    with pytest.raises(Exception, match="mimic-cxr-2.0.0|not found|No such"):
        train.main(["-cfg", "cxrclip/configs/demo.yaml", "--set", f"data.sources.0.root={tmp_path}",
                    f"output_root={tmp_path}"])
    with pytest.raises(SystemExit):
        train.main(["-cfg", "cxrclip/configs/demo.yaml", "--set", "loss.icl=1"])
    assert "unknown key 'loss.icl'" in capsys.readouterr().err
