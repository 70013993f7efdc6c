"""Evaluating a checkpoint (README: `cxrclip.test -cfg r50_mcc.yaml --weights r50_mcc.tar`) needs no ImageNet file;
a missing --weights is named first; a missing BERT folder is one line naming it and model.text.pretrained."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig

from cxrclip import test as cx_test
from cxrclip.checkpoint import to_original
from cxrclip.loading import add_weights_args, load_from_args
from cxrclip.model import CXRClip, ImageEncoderConfig, ModelConfig, TextEncoderConfig
from shared.cli import run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_BERT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def _args(*argv):
    import argparse

    parser = argparse.ArgumentParser(prog="cxrclip.test")
    add_weights_args(parser)
    return parser, parser.parse_args(list(argv))


def test_missing_weights_is_named_before_anything_the_config_needs(tmp_path, capsys):
    argv = ["-cfg", str(CONFIGS / "r50_mcc.yaml"), "--weights", str(tmp_path / "r50_mcc.tar"), "--trust-checkpoint"]
    assert run_cli("python -m cxrclip.test", lambda: cx_test.main(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--weights" in err and "r50_mcc.tar" in err
    assert "resnet50-imagenet" not in err and "Bio_ClinicalBERT" not in err


def test_missing_bert_folder_is_one_line_naming_the_key(tmp_path, capsys):
    weights = tmp_path / "r50_mcc.tar"
    weights.write_bytes(b"not read: the model is built first")
    parser, args = _args("-cfg", str(CONFIGS / "r50_mcc.yaml"), "--weights", str(weights), "--set",
                         f"model.text.pretrained={tmp_path / 'Bio_ClinicalBERT'}", "engine.device=cpu")
    assert run_cli("python -m cxrclip.test", lambda: load_from_args(parser, args)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.text.pretrained" in err and str(tmp_path / "Bio_ClinicalBERT") in err


def test_checkpoint_evaluation_reads_no_imagenet_or_bert_weights(tmp_path):
    """ImageNet file absent, BERT folder with config.json only: the released checkpoint supplies every weight."""
    bert_dir = tmp_path / "Bio_ClinicalBERT"
    BertConfig(**TINY_BERT).save_pretrained(bert_dir)          # config only, no weights file
    torch.manual_seed(0)
    source = CXRClip(ModelConfig(image=ImageEncoderConfig(name="resnet18"), text=TextEncoderConfig(bert=TINY_BERT),
                                 projection_dim=512))
    weights = tmp_path / "released.tar"
    torch.save({"model": to_original(source.state_dict())}, weights)
    parser, args = _args("-cfg", str(CONFIGS / "r50_mcc.yaml"), "--weights", str(weights), "--set",
                         "model.image.name=resnet18", f"model.image.pretrained={tmp_path / 'no-imagenet.pth'}",
                         f"model.text.pretrained={bert_dir}", "engine.device=cpu")
    loaded = load_from_args(parser, args)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    # training (load_pretrained=True) still needs the ImageNet file, and says which key names it
    cfg = loaded.cfg.model
    with pytest.raises(FileNotFoundError, match="model.image.pretrained: ImageNet weights file not found"):
        CXRClip(cfg)


def test_missing_tokenizer_names_the_key(tmp_path):
    from cxrclip.tokenizer import load_tokenizer

    with pytest.raises(FileNotFoundError, match=r"folder not found.*--set data.tokenizer=DIR"):
        load_tokenizer(tmp_path / "Bio_ClinicalBERT")
