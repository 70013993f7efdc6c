"""cxrclip.predict on the shipped real X-rays with a tiny random CXR-CLIP saved as a training run."""
from __future__ import annotations

import torch

from shared.config import load_config
from shared.tests.predict_contract import check_records, predict_json, save_run, user_images

from cxrclip.config import TrainConfig
from cxrclip.model import CXRClip
from cxrclip.predict import main
from cxrclip.tokenizer import build_vocab, load_tokenizer

LABELS = ["Atelectasis", "Cardiomegaly", "Pleural Effusion", "Pneumothorax"]
TEXTS = ["There is a pleural effusion.", "Heart size is normal.", "No pneumothorax.", "The lungs are clear."]


def test_predict_real_images(tmp_path, capsys):
    cfg = load_config(TrainConfig, "cxrclip/configs/demo.yaml")
    run = tmp_path / "run"
    prompts = [p for pair in cfg.eval.binary_prompts.values() for p in pair]
    cfg.model.text.bert["vocab_size"] = len(load_tokenizer(build_vocab(TEXTS + LABELS + prompts, run / "tokenizer")))
    torch.manual_seed(0)
    save_run(run, cfg, CXRClip(cfg.model, load_pretrained=False))
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    images = user_images(tmp_path / "in")
    records = predict_json(main, [*map(str, images.values()), "--run", str(run), "--labels",
                                  str(tmp_path / "labels.txt"), "--texts", str(tmp_path / "texts.txt"), "--k", "2",
                                  "--out", str(tmp_path / "out")], capsys)
    check_records(records, "cxrclip", LABELS, images)
    for r in records:
        assert set(r["similarity"]) == set(LABELS) and all(-1 <= s <= 1 for s in r["similarity"].values())
        sims = [t["similarity"] for t in r["nearest_texts"]]
        assert len(sims) == 2 and sims == sorted(sims, reverse=True) and r["panels"] == 3
        assert {t["text"] for t in r["nearest_texts"]} <= set(TEXTS)
