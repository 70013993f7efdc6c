"""Tokenizers, offline: a local Bio_ClinicalBERT directory, or a small WordPiece vocabulary built from texts.

The paper tokenises with Bio_ClinicalBERT's WordPiece (vocab 28,996): pad to 256 when training, to the longest
sequence when evaluating, truncation at 256. Tests and the synthetic demo build a vocabulary from the twin's reports
and prompts instead (every single character and its ``##`` continuation is included, so no word becomes [UNK]).
"""
from __future__ import annotations

import string
from pathlib import Path
from typing import Iterable, Literal

import torch
from transformers import BertTokenizer
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_vocab(texts: Iterable[str], out_dir: str | Path) -> Path:
    """Write ``out_dir/vocab.txt`` covering every word of ``texts``; returns the directory."""
    normalise, split = BertNormalizer(lowercase=True), BertPreTokenizer()  # BERT's own basic tokenisation
    words = sorted({w for text in texts for w, _ in split.pre_tokenize_str(normalise.normalize_str(text))})
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation) | {c for w in words for c in w})
    vocab = list(dict.fromkeys(SPECIAL_TOKENS + chars + [f"##{c}" for c in chars] + words))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return out_dir


def load_tokenizer(path: str | Path) -> BertTokenizer:
    """A BERT WordPiece tokenizer from a local directory (HF files or a bare vocab.txt); never downloads."""
    path = Path(path)
    if not (path / "vocab.txt").is_file() and not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer in {path}{'' if path.is_dir() else ' (folder not found)'}: expected "
                                "vocab.txt or tokenizer.json (save Bio_ClinicalBERT's tokenizer there, or point "
                                "data.tokenizer - or model.text.pretrained when data.tokenizer is empty - at another "
                                "folder: --set data.tokenizer=DIR)")
    return BertTokenizer.from_pretrained(str(path), local_files_only=True)


def tokenize(tokenizer: BertTokenizer, texts: list[str], max_length: int = 256,
             padding: Literal["max_length", "longest"] = "longest") -> dict[str, torch.Tensor]:
    out = tokenizer(list(texts), padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}
