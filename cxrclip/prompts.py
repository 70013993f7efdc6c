"""Texts for label-only datasets: one sentence per label drawn from a prompt file, shuffled and joined.

Prompt file (JSON): ``{label: {"pos": [...], "neg": [...], "unc": [...]}}``. A user's own label set (the CGMH fork's
tube/line findings, say) is just another prompt file plus a task list in the config — no code edit.

Training texts (random; ``rng`` given):
  CheXpert  one sentence per labelled finding: "pos" for 1, "neg" for 0, "unc" for -1; blanks dropped; shuffled.
  Chest14   the positives (["No Finding"] for an image without findings, its Finding Labels) + ``num_negs`` (3)
            negatives sampled from the 14 tasks that are not positive; only "Effusion" is renamed "Pleural
            Effusion" (the original's train_prompts_all.json keeps "Pleural_Thickening" with its underscore).
  custom    (CGMH) positives + ``num_negs`` (default 0) negatives from the configured tasks; no uncertain labels.
The original's prompt file (``train_prompts_all.json``, 21 labels) is read as it is. ``"templates"`` instead of a
file gives plain invented sentences (``template_prompts``; demo and tests only — not the paper's text).

CheXpert5x200 zero-shot: ``chexpert5x200_class_prompts()`` = every combination of the shipped word lists
(``prompts/chexpert5x200_class_prompt_words.json``), the published 489-prompt ensemble.

Validation texts (deterministic; ``rng=None``): the positives, or "No Finding" when there are none; the first
sentence of each; no shuffling.

"No Finding": a prompt file need not have this entry (the CGMH fork's has none, and its validation crashed with a
KeyError on it). A study with nothing positive then reads the built-in ``NO_FINDING_SENTENCE``; a training text
that comes out empty (no positives and no negatives drawn, e.g. CGMH with ``num_negs`` 0) does the same. A
"No Finding" entry in the file (with "pos" sentences) takes precedence.
"""
from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from shared.data.labels import NIH_LABELS

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
CHEXPERT5X200_WORDS = PROMPT_DIR / "chexpert5x200_class_prompt_words.json"
TEMPLATES = "templates"   # data.sources.N.prompt_file value: invented sentences instead of a file
NO_FINDING = "No Finding"
NO_FINDING_SENTENCE = "No acute cardiopulmonary abnormality."  # when the prompt file has no "No Finding" entry
KINDS = ("pos", "neg", "unc")


def chest14_name(label: str) -> str:
    """NIH label -> its key in the prompt file: only "Effusion" -> "Pleural Effusion" (as the original)."""
    return "Pleural Effusion" if label == "Effusion" else label


CHEST14_TASKS = [chest14_name(label) for label in NIH_LABELS]


def template_prompts(labels: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """Plain report-style sentences for any label set, used when no prompt file is configured."""
    prompts = {}
    for label in labels:
        name = label.replace("_", " ").lower()
        prompts[label] = {
            "pos": [f"There is {name}.", f"Findings consistent with {name}.", f"{label} is present."],
            "neg": [f"No {name}.", f"There is no evidence of {name}.", f"{label} is absent."],
            "unc": [f"Possible {name}.", f"{label} cannot be excluded.", f"Findings may represent {name}."],
        }
    return with_no_finding(prompts)


def with_no_finding(prompts: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
    """``prompts`` with a "No Finding" entry: the file's own when it has "pos" sentences, else the built-in one."""
    entry = prompts.get(NO_FINDING) or {}
    if not entry.get("pos"):
        prompts[NO_FINDING] = {"neg": [], "unc": [], **entry, "pos": [NO_FINDING_SENTENCE]}
    return prompts


def load_prompts(path: str | Path) -> dict[str, dict[str, list[str]]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    data = json.loads(path.read_text())
    for label, entry in data.items():
        if not isinstance(entry, dict) or set(entry) - set(KINDS):
            raise ValueError(f"{path}: label {label!r} must map to a dict with keys among {KINDS}, got {entry!r}")
    return with_no_finding(data)


def _sentence(prompts: Mapping, label: str, kind: str, rng: random.Random | None) -> str | None:
    if label == NO_FINDING and kind == "pos" and not (prompts.get(NO_FINDING) or {}).get("pos"):
        return NO_FINDING_SENTENCE
    if label not in prompts:
        raise KeyError(f"label {label!r} has no entry in the prompt file (labels there: {sorted(prompts)})")
    sentences = prompts[label].get(kind) or []
    if not sentences:
        return None
    return sentences[0] if rng is None else rng.choice(sentences)


def compose(prompts: Mapping, positives: Sequence[str], negatives: Sequence[str] = (),
            uncertain: Sequence[str] = (), rng: random.Random | None = None) -> str:
    """One sentence per label, empties dropped, shuffled when ``rng`` is given, joined with spaces."""
    picked = [_sentence(prompts, label, kind, rng)
              for kind, labels in (("pos", positives), ("neg", negatives), ("unc", uncertain)) for label in labels]
    sentences = [s for s in picked if s]
    if rng is not None:
        rng.shuffle(sentences)
    return " ".join(sentences)


def sample_negatives(tasks: Sequence[str], positives: Sequence[str], num_negs: int, rng: random.Random) -> list[str]:
    candidates = [t for t in tasks if t not in set(positives)]
    return rng.sample(candidates, min(num_negs, len(candidates)))


def chexpert_text(values: Mapping[str, float], prompts: Mapping, rng: random.Random) -> str:
    """CheXpert-style labels (1 / 0 / -1 / NaN per finding) -> a training text."""
    def having(v: float) -> list[str]:
        return [k for k, x in values.items() if x is not None and not (isinstance(x, float) and math.isnan(x))
                and x == v]
    return compose(prompts, having(1), having(0), having(-1), rng)


def positives_text(positives: Sequence[str], prompts: Mapping, rng: random.Random, tasks: Sequence[str],
                   num_negs: int) -> str:
    """Chest14 (tasks = CHEST14_TASKS, num_negs 3) and custom label sets (CGMH: own tasks, num_negs 0)."""
    return compose(prompts, positives, sample_negatives(tasks, positives, num_negs, rng), (), rng)


def validation_text(positives: Sequence[str], prompts: Mapping) -> str:
    return compose(prompts, list(positives) or [NO_FINDING])


def chexpert5x200_class_prompts(path: str | Path = CHEXPERT5X200_WORDS) -> dict[str, list[str]]:
    """{class: prompts} of the published CheXpert5x200 zero-shot: every combination of a class's word lists, in
    the file's key order, joined by spaces and stripped (210 / 15 / 192 / 18 / 54; repeats kept)."""
    words = json.loads(Path(path).read_text())
    return {cls: [" ".join(combo).strip() for combo in itertools.product(*lists.values())]
            for cls, lists in words.items()}
