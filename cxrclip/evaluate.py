"""CXR-CLIP evaluation: embeddings, image<->text retrieval, binary and multi-class zero-shot.

- Retrieval (MIMIC / OpenI / CheXpert5x200): texts are de-duplicated; each image's target is its report's
  longer section (by length — the original compared the strings alphabetically); Recall@1/5/10 and mean rank,
  image->text (as published) and text->image (which the original lacks).
- Binary zero-shot (SIIM, VinDr, per class of a labelled set): prompts ["No <class>", "<class>"]; p(positive) =
  softmax over the two cosine similarities without temperature; AUROC (headline), accuracy, F1.
- CheXpert5x200 zero-shot: a prompt ensemble per class, score = mean cosine over the class's prompts, argmax;
  per-class, macro and micro accuracy (micro is the headline).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from cxrclip.tokenizer import tokenize
from shared.data.images import load_image, to_rgb
from shared.metrics.classification import classification_table
from shared.metrics.zeroshot import (binary_prompt_probability, dedup_texts, image_text_retrieval,
                                     multiclass_accuracy)


class _Images(Dataset):
    def __init__(self, paths: Sequence[str], transform):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(to_rgb(load_image(self.paths[i])))


@torch.no_grad()
def embed_images(model, paths: Sequence[str], transform, device, batch_size: int = 64,
                 num_workers: int = 0, source: str = "the evaluation set") -> torch.Tensor:
    if len(paths) == 0:   # one user error line instead of torch.cat's "expected a non-empty list"
        raise ValueError(f"{source}: no images to evaluate; check the eval split / root / CSV the config names")
    loader = DataLoader(_Images(paths, transform), batch_size=batch_size, num_workers=num_workers)
    return torch.cat([model.encode_image(batch.to(device)).float().cpu() for batch in loader])


@torch.no_grad()
def embed_texts(model, tokenizer, texts: Sequence[str], device, batch_size: int = 256,
                max_length: int = 256) -> torch.Tensor:
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenize(tokenizer, list(texts[start:start + batch_size]), max_length, padding="longest")
        out.append(model.encode_text(**{k: v.to(device) for k, v in tokens.items()}).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def retrieval(image_emb: torch.Tensor, texts: Sequence[str], text_emb_fn) -> dict:
    """``texts[i]`` is image i's report; ``text_emb_fn(unique_texts)`` embeds the de-duplicated texts.
    -> {"i2t": scores, "t2i": scores, "similarity": (images, unique texts), "texts": unique, "target": (images,)}
    (the last three for a retrieval strip)."""
    unique, index = dedup_texts(texts)
    similarity = (image_emb @ text_emb_fn(unique).T).numpy()
    return {**image_text_retrieval(similarity, index), "similarity": similarity, "texts": unique, "target": index}


def binary_zeroshot(image_emb: torch.Tensor, labels: np.ndarray, classes: Sequence[str], text_emb_fn,
                    prompt_pairs: dict[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Per-class AUROC / accuracy / F1 of p(positive) from a [negative, positive] prompt pair per class
    (default ["No c", "c"], the paper's SIIM / VinDr prompts)."""
    pairs = [list((prompt_pairs or {}).get(c, (f"No {c}", c))) for c in classes]
    bad = [c for c, pair in zip(classes, pairs) if len(pair) != 2]
    if bad:
        raise ValueError(f"binary prompts must be [negative, positive] pairs; not so for {bad}")
    prompts = [p for pair in pairs for p in pair]
    emb = text_emb_fn(prompts)
    sims = (image_emb @ emb.T).numpy().reshape(len(image_emb), len(classes), 2)
    probs = binary_prompt_probability(sims[..., 0], sims[..., 1])
    return classification_table(labels, probs, list(classes))


def ensemble_scores(image_emb: torch.Tensor, class_prompts: dict[str, list[str]], text_emb_fn) -> np.ndarray:
    """(images, classes): the mean cosine over each class's prompts (CheXpert5x200's score; argmax predicts)."""
    return np.stack([(image_emb @ text_emb_fn(prompts).T).mean(1).numpy() for prompts in class_prompts.values()],
                    axis=1)


def ensemble_zeroshot(image_emb: torch.Tensor, targets: np.ndarray, class_prompts: dict[str, list[str]],
                      text_emb_fn) -> pd.DataFrame:
    """CheXpert5x200: mean cosine over each class's prompts, argmax, per-class/macro/micro accuracy."""
    return multiclass_accuracy(targets, ensemble_scores(image_emb, class_prompts, text_emb_fn), list(class_prompts))


def load_class_prompts(path: str | Path) -> dict[str, list[str]]:
    import json

    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not all(isinstance(v, list) and v for v in data.values()):
        raise ValueError(f"{path}: expected {{class: [prompt, ...]}} with at least one prompt per class")
    return data
