"""Texts from labels: deterministic validation prompts, negatives sampling, user prompt files."""
from __future__ import annotations

import json
import random

import pytest

from cxrclip.prompts import (CHEST14_TASKS, NO_FINDING, NO_FINDING_SENTENCE, chexpert_text, load_prompts,
                             positives_text, template_prompts, validation_text)

PROMPTS = {
    "Cardiomegaly": {"pos": ["The heart is enlarged.", "Cardiomegaly."], "neg": ["Normal heart size."], "unc": []},
    "Edema": {"pos": ["Pulmonary edema."], "neg": ["No edema."], "unc": ["Possible edema."]},
    "Pneumothorax": {"pos": ["Pneumothorax."], "neg": ["No pneumothorax."], "unc": []},
    NO_FINDING: {"pos": ["No acute findings."], "neg": [], "unc": []},
}


def test_validation_text_is_deterministic_first_sentence_in_order():
    assert validation_text(["Cardiomegaly", "Edema"], PROMPTS) == "The heart is enlarged. Pulmonary edema."
    assert validation_text([], PROMPTS) == "No acute findings."


def test_chexpert_text_uses_pos_neg_unc_and_drops_blanks():
    rng = random.Random(0)
    values = {"Cardiomegaly": 1.0, "Edema": -1.0, "Pneumothorax": 0.0, NO_FINDING: float("nan")}
    sentences = set(chexpert_text(values, PROMPTS, rng).replace(". ", ".|").split("|"))
    assert "Possible edema." in sentences and "No pneumothorax." in sentences
    assert sentences & {"The heart is enlarged.", "Cardiomegaly."} and len(sentences) == 3
    # an uncertain label without "unc" sentences contributes nothing
    assert chexpert_text({"Cardiomegaly": -1.0}, PROMPTS, rng) == ""


def test_chest14_negatives_exclude_positives_and_count():
    prompts = template_prompts(CHEST14_TASKS)
    rng = random.Random(1)
    for _ in range(20):
        text = positives_text(["Pleural Effusion"], prompts, rng, CHEST14_TASKS, num_negs=3)
        assert text.count("no evidence of") + text.count("No ") + text.count("is absent") == 3
        assert "There is no evidence of pleural effusion." not in text
    assert "Pleural Effusion" in CHEST14_TASKS and "Effusion" not in CHEST14_TASKS


def test_custom_label_set_from_a_prompt_file(tmp_path):
    path = tmp_path / "cgmh.json"
    path.write_text(json.dumps({"Chest tube in place": {"pos": ["A chest tube is in place."], "neg": ["No chest tube."]},
                                "Pneumothorax": {"pos": ["Pneumothorax."], "neg": ["No pneumothorax."]}}))
    prompts = load_prompts(path)
    text = positives_text(["Chest tube in place"], prompts, random.Random(0), list(prompts), num_negs=0)
    assert text == "A chest tube is in place."
    with pytest.raises(KeyError, match="Foreign body"):
        validation_text(["Foreign body"], prompts)


def test_bad_prompt_file_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"Edema": {"positive": ["x"]}}))
    with pytest.raises(ValueError, match="bad.json"):
        load_prompts(path)


def test_no_finding_falls_back_to_a_built_in_sentence_without_an_entry(tmp_path):
    path = tmp_path / "own.json"
    path.write_text(json.dumps({"Pneumothorax": {"pos": ["Pneumothorax."], "neg": ["No pneumothorax."]}}))
    prompts = load_prompts(path)
    assert validation_text([], prompts) == NO_FINDING_SENTENCE
    # also when a table never went through load_prompts, and when the file's entry has no "pos" sentence
    assert validation_text([], {"Pneumothorax": PROMPTS["Pneumothorax"]}) == NO_FINDING_SENTENCE
    assert validation_text([], {NO_FINDING: {"neg": ["x"]}}) == NO_FINDING_SENTENCE
    # a file's own "No Finding" sentence wins
    assert validation_text([], PROMPTS) == "No acute findings."


def test_cgmh_example_config_reads_studies_with_no_positive_label(tmp_path):
    """The shipped CGMH config and prompt file (which has no "No Finding" entry) on a tiny CSV in its format."""
    import numpy as np
    from PIL import Image

    from cxrclip import train
    from shared.config import load_config

    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / name)
    csv = tmp_path / "cgmh.csv"
    csv.write_text('image,text_label\n"[\'a.png\', \'b.png\']","[\'Chest tube in place\']"\n"[\'c.png\']","[]"\n')
    cfg = load_config(train.TrainConfig, "cxrclip/configs/cgmh_example.yaml",
                      [f"data.sources.0.train_csv={csv}", f"data.sources.0.valid_csv={csv}", "data.image_size=32"])
    assert NO_FINDING not in json.loads(open(cfg.data.sources[0].prompt_file).read())
    for is_train in (False, True):
        dataset, texts = train.build_datasets(cfg, train=is_train)
        healthy = dataset[1]
        assert healthy["text1"] == healthy["text2"] == NO_FINDING_SENTENCE
        assert dataset[0]["text1"] and dataset[0]["text1"] != NO_FINDING_SENTENCE
        assert NO_FINDING_SENTENCE in texts  # so a vocabulary built from the texts ("build") covers it
