"""test.py's evaluation sources beyond MIMIC: classification CSVs (RSNA / SIIM / VinDr) for binary zero-shot,
OpenI and (image, text) CSVs for retrieval, CheXpert5x200 retrieval; and the one classification-CSV reader."""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrclip.config import TrainConfig
from cxrclip.data import read_classification_csv
from cxrclip.model import CXRClip, ImageEncoderConfig, ModelConfig, TextEncoderConfig
from cxrclip.test import evaluate_all, retrieval_frame
from cxrclip.tokenizer import build_vocab, load_tokenizer
from shared.data import synthetic

VINDR = ["Aortic enlargement", "Cardiomegaly", "Other lesion", "Pleural effusion"]  # a stand-in for the 20 names


def write_images(folder, n, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(folder / f"im{i}.png")
        names.append(f"images/im{i}.png")
    return names


def test_classification_csv_formats(tmp_path):
    names = write_images(tmp_path / "images", 4)
    per_class = tmp_path / "siim.csv"
    pd.DataFrame({"image": names, "Pneumothorax": [0, 1, 0, 1]}).to_csv(per_class, index=False)
    paths, labels = read_classification_csv(per_class, ["Pneumothorax"])
    assert paths[1] == str(tmp_path / "images/im1.png") and labels[:, 0].tolist() == [0, 1, 0, 1]
    scalar = tmp_path / "rsna.csv"
    pd.DataFrame({"image": names, "label": [1, 0, 0, 1], "class": ["Pneumonia"] * 4}).to_csv(scalar, index=False)
    assert read_classification_csv(scalar, ["Pneumonia"])[1][:, 0].tolist() == [1, 0, 0, 1]
    listed = tmp_path / "vindr.csv"
    pd.DataFrame({"image": names, "label": [str([1, 0, 0, 1]), str([0, 1, 1, 0]), str([0] * 4), str([1] * 4)]}
                 ).to_csv(listed, index=False)
    _, labels = read_classification_csv(listed, ["Cardiomegaly", "Pleural effusion"], VINDR)
    assert labels.tolist() == [[0, 1], [1, 0], [0, 0], [1, 1]]
    with pytest.raises(ValueError, match="Edema"):
        read_classification_csv(listed, ["Edema"], VINDR)
    with pytest.raises(ValueError, match="4 value"):
        read_classification_csv(listed, ["Cardiomegaly"])


def tiny_model_and_tokenizer(tmp_path, texts):
    torch.manual_seed(0)
    tokenizer = load_tokenizer(build_vocab(texts, tmp_path / "tok"))
    model = CXRClip(ModelConfig(image=ImageEncoderConfig(name="resnet18"), projection_dim=16,
                                text=TextEncoderConfig(bert=dict(vocab_size=len(tokenizer), hidden_size=32,
                                                                 num_hidden_layers=1, num_attention_heads=2,
                                                                 intermediate_size=64))))
    return model.eval(), tokenizer


def _finite(table: dict) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) for v in table.values())


CLASSES = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
RSNA_PROMPTS = ["No evidence of pneumonia", "Findings suggesting pneumonia."]
REPORTS = ["Heart size is normal.", "The heart is enlarged.", "Small left effusion.", "", "Clear lungs.",
           "Clear lungs."]


def csv_eval_config(tmp_path) -> TrainConfig:
    """A config evaluating six images three ways: RSNA-style zero-shot CSV, (image, text) retrieval CSV (one
    report empty) and CheXpert5x200 (classes 0, 1, 2, 3, 4, 1)."""
    names = write_images(tmp_path / "images", 6)
    rsna = tmp_path / "rsna_test.csv"
    pd.DataFrame({"image": names, "label": [0, 1, 0, 1, 1, 0]}).to_csv(rsna, index=False)
    pairs = tmp_path / "openi_test.csv"
    pd.DataFrame({"image": names, "text": REPORTS}).to_csv(pairs, index=False)
    five = tmp_path / "chexpert_5x200.csv"
    onehot = np.eye(5, dtype=int)[[0, 1, 2, 3, 4, 1]]
    pd.DataFrame({"Path": names, "Report Impression": REPORTS, **dict(zip(CLASSES, onehot.T))}).to_csv(five,
                                                                                                        index=False)
    cfg = TrainConfig()
    cfg.data.image_size = 32
    ev = cfg.eval
    ev.retrieval_root, ev.retrieval_layout = str(pairs), "csv"
    ev.zeroshot_root, ev.zeroshot_csv, ev.zeroshot_classes = None, str(rsna), ["Pneumonia"]
    ev.binary_prompts = {"Pneumonia": RSNA_PROMPTS}
    ev.chexpert5x200_csv = str(five)
    return cfg


@pytest.mark.timeout(300)
def test_zero_shot_on_a_classification_csv_and_retrieval_on_openi_csv_and_5x200(tmp_path):
    openi_root = synthetic.generate("openi", tmp_path / "openi", n=12, size=32, seed=0)
    openi_frame = retrieval_frame(str(openi_root), "openi")
    assert len(openi_frame) and (openi_frame["text"] != "").all() and openi_frame["path"].map(os.path.isfile).all()

    cfg = csv_eval_config(tmp_path)
    ev = cfg.eval
    texts = REPORTS + RSNA_PROMPTS + openi_frame["text"].tolist() + CLASSES + ["there is is present findings "
                                                                               "consistent with no"]
    model, tokenizer = tiny_model_and_tokenizer(tmp_path, texts)
    figures = tmp_path / "figures"
    figures.mkdir()
    with pytest.warns(UserWarning, match="1 of 6 images have no report text"):     # the "" report is said
        metrics = evaluate_all(model, tokenizer, cfg, torch.device("cpu"), figures_dir=figures)
    pictures = {"retrieval_strip.png", "chexpert5x200_confusion.png", "chexpert5x200_retrieval_strip.png"}
    assert {p.name for p in figures.iterdir()} == pictures
    assert all(Image.open(figures / name).size[0] > 300 for name in pictures)
    assert set(metrics["zeroshot_auroc"]) == {"Pneumonia", "mean"} and _finite(metrics["zeroshot_auroc"])
    for key in ("retrieval_i2t", "retrieval_t2i", "chexpert5x200_retrieval_i2t", "chexpert5x200_retrieval_t2i"):
        assert _finite(metrics[key]) and 0.0 <= metrics[key]["R@1"] <= 1.0, key
    assert _finite(metrics["chexpert5x200_accuracy"])

    ev.retrieval_root, ev.retrieval_layout = str(openi_root), "openi"
    ev.zeroshot_csv = ev.chexpert5x200_csv = None
    metrics = evaluate_all(model, tokenizer, cfg, torch.device("cpu"))
    assert set(metrics) == {"retrieval_i2t", "retrieval_t2i"} and _finite(metrics["retrieval_i2t"])

    ev.zeroshot_root, ev.zeroshot_csv = str(openi_root), str(tmp_path / "rsna_test.csv")
    with pytest.raises(ValueError, match="one of eval.zeroshot_root and eval.zeroshot_csv"):
        evaluate_all(model, tokenizer, cfg, torch.device("cpu"))


def test_undecodable_evaluation_images_are_named_or_left_out(tmp_path, monkeypatch, capsys):
    """data.verify_images names an undecodable image of any evaluation set before anything is embedded;
    data.on_bad_image=warn leaves it out of each set together with its label / target / text."""
    import cxrclip.test as cxr_test
    from shared.data.images import ImageReadError

    cfg = csv_eval_config(tmp_path)
    broken = tmp_path / "images" / "im2.png"
    broken.write_bytes(broken.read_bytes()[:40])
    model, tokenizer = tiny_model_and_tokenizer(tmp_path, REPORTS + RSNA_PROMPTS + CLASSES)
    cfg.data.verify_images = True
    with pytest.raises(ImageReadError, match=r"1 of 5 .*im2\.png.*data\.on_bad_image=warn"):
        evaluate_all(model, tokenizer, cfg, torch.device("cpu"))
    seen = {}
    for name, position in (("binary_zeroshot", 1), ("multiclass_accuracy", 0)):   # where the labels / targets go
        def record(*args, _name=name, _at=position, _real=getattr(cxr_test, name), **kwargs):
            seen[_name] = np.asarray(args[_at]).ravel().tolist()
            return _real(*args, **kwargs)
        monkeypatch.setattr(cxr_test, name, record)
    cfg.data.verify_images, cfg.data.on_bad_image = False, "warn"
    with pytest.warns(UserWarning, match="1 of 6 image files cannot be decoded"):
        metrics = evaluate_all(model, tokenizer, cfg, torch.device("cpu"))
    assert seen == {"binary_zeroshot": [0, 1, 1, 1, 0], "multiclass_accuracy": [0, 1, 3, 4, 1]}
    out = capsys.readouterr().out
    assert "retrieval (csv) on 4 images" in out and "CheXpert5x200 retrieval on 4 images" in out
    assert _finite(metrics["zeroshot_auroc"]) and _finite(metrics["retrieval_i2t"])
