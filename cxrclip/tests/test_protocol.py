"""The paper's training text, splits and zero-shot prompts (spec section 8), on real metadata where shipped."""
from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from cxrclip import prompts as P
from cxrclip.data import chest14_split, chexpert_samples, prompt_text_fn, read_chexpert5x200, Sample
from shared.data import nih, splits, synthetic

# A prompt file shaped like the original's train_prompts_all.json: underscore keys kept, "No Finding" present.
ORIGINAL_LIKE = {label: {"pos": [f"{label} present."], "neg": [f"no {label}."]} for label in P.CHEST14_TASKS}
ORIGINAL_LIKE[P.NO_FINDING] = {"pos": ["no acute cardiopulmonary process."], "neg": [], "unc": []}


@pytest.fixture()
def original_prompt_file(tmp_path):
    path = tmp_path / "train_prompts_all.json"
    path.write_text(json.dumps(ORIGINAL_LIKE))
    return path


def test_original_prompt_file_with_underscore_keys_is_read_as_is(original_prompt_file):
    prompts = P.load_prompts(original_prompt_file)
    assert "Pleural_Thickening" in P.CHEST14_TASKS and "Pleural Thickening" not in P.CHEST14_TASKS
    assert P.chest14_name("Effusion") == "Pleural Effusion" and P.chest14_name("Pleural_Thickening") == "Pleural_Thickening"
    make = prompt_text_fn(prompts, "positives", train=True, tasks=P.CHEST14_TASKS, num_negs=3)
    random.seed(0)
    for _ in range(50):  # every label can be drawn as a negative: none may miss its key
        text = make(Sample(images=["x"], positives=["Pleural_Thickening"]), 0)
        assert "Pleural_Thickening present." in text and text.count("no ") == 3


def test_chest14_image_without_findings_reads_a_no_finding_sentence(original_prompt_file, tmp_path):
    prompts = P.load_prompts(original_prompt_file)
    sample = Sample(images=["x"], positives=[P.NO_FINDING])
    assert prompt_text_fn(prompts, "positives", train=False)(sample, 0) == "no acute cardiopulmonary process."
    text = prompt_text_fn(prompts, "positives", train=True, tasks=P.CHEST14_TASKS, num_negs=3)(sample, 0)
    assert "no acute cardiopulmonary process." in text and text.count(" present.") == 0


def test_label_only_source_without_prompt_file_is_one_clear_error():
    from cxrclip.config import SourceConfig
    from cxrclip.train import source_prompts

    with pytest.raises(FileNotFoundError, match=r"data\.sources\.1\.prompt_file not set.*train_prompts_all\.json"):
        source_prompts(SourceConfig(name="chexpert", root="x"), 1)
    with pytest.raises(FileNotFoundError, match=r"data\.sources\.2\.prompt_file nowhere\.json not found"):
        source_prompts(SourceConfig(name="chest14", root="x", prompt_file="nowhere.json"), 2)
    assert "Pleural_Thickening" in source_prompts(SourceConfig(name="chest14", prompt_file=P.TEMPLATES), 2)


def test_chexpert5x200_prompts_are_the_published_489():
    prompts = P.chexpert5x200_class_prompts()
    assert {c: len(v) for c, v in prompts.items()} == {"Atelectasis": 210, "Cardiomegaly": 15, "Consolidation": 192,
                                                       "Edema": 18, "Pleural Effusion": 54}
    assert prompts["Atelectasis"][0] == "subsegmental atelectasis at the mid lung zone"  # blank severity stripped
    assert prompts["Atelectasis"][70] == "mild subsegmental atelectasis at the mid lung zone"
    assert prompts["Pleural Effusion"][0] == "left bilateral pleural effusion"  # severity, location, subtype
    assert all(p == p.strip() and "  " not in p for v in prompts.values() for p in v)


def test_chest14_split_uses_train_val_list_only_and_splits_patients():
    frame = chest14_split(nih.read_index(splits.FILES / "nih", check_files=False))  # the shipped real metadata
    assert not set(frame["image_id"]) & set(splits.nih_official()["test"])                        # the NIH test set never trains
    assert frame["split"].value_counts().to_dict() == {"train": 69718, "val": 16806}   # of 86,524
    per_split = frame.groupby("split")["patient_id"].unique()
    assert (len(per_split["train"]), len(per_split["val"])) == (22406, 5602)
    assert not set(per_split["train"]) & set(per_split["val"])


def test_chexpert_training_leaves_out_the_5x200_patients(tmp_path):
    twin = synthetic.generate("chexpert", tmp_path / "chexpert", n=40, size=32, seed=0)
    everything = chexpert_samples(twin, "train")
    patients = sorted({p.split("/")[-3] for s in everything for p in s.images})
    held = patients[:3]
    five = tmp_path / "chexpert_5x200.csv"
    pd.DataFrame({"Path": [f"CheXpert-v1.0/train/{p}/study1/view1_frontal.jpg" for p in held],
                  "Atelectasis": 1, "Cardiomegaly": 0, "Consolidation": 0, "Edema": 0, "Pleural Effusion": 0}
                 ).to_csv(five, index=False)
    assert set(read_chexpert5x200(five)["patient_id"]) == set(held)
    kept = chexpert_samples(twin, "train", holdout_csv=five)
    kept_patients = {p.split("/")[-3] for s in kept for p in s.images}
    assert kept_patients == set(patients) - set(held)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"Image": ["a.jpg"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="bad.csv: missing column 'Path'"):
        read_chexpert5x200(bad)


def test_openi_retrieval_pairs_are_one_frontal_image_per_report(tmp_path):
    from shared.data import openi
    from cxrclip.data import openi_frontal

    root = synthetic.generate("openi", tmp_path / "openi", n=12, size=32, seed=0)
    every = openi.read_reports(root, per="image")
    pairs = openi_frontal(every)
    assert len(every) > len(pairs) == every["report_id"].nunique()        # the twin has lateral views too
    assert pairs["image_id"].str.endswith("-1001").all()                  # the twin's frontal views
    # with Kaggle's projections table: a report whose first image is lateral keeps its frontal one
    flipped = every["image_id"].str.endswith("-2001")
    table = pd.DataFrame({"filename": every["image_id"].str.removeprefix("CXR") + ".dcm.png",
                          "projection": ["Frontal" if f else "Lateral" for f in flipped]})
    table.to_csv(tmp_path / "indiana_projections.csv", index=False)
    chosen = openi_frontal(every, tmp_path / "indiana_projections.csv")
    assert chosen["image_id"].str.endswith("-2001").all() and len(chosen) == int(flipped.sum())


def test_list_valued_image_cells_are_parsed(tmp_path, capsys):
    from cxrclip.data import eval_image_paths, read_classification_csv

    csv = tmp_path / "test.csv"
    csv.write_text('image,Pneumothorax\n"[\'a/1.png\', \'a/2.png\']",1\n"[\'b/1.png\']",0\nc.png,0\n')
    paths, labels = read_classification_csv(csv, ["Pneumothorax"])
    assert paths == [str(tmp_path / "a/1.png"), str(tmp_path / "b/1.png"), str(tmp_path / "c.png")]
    assert labels[:, 0].tolist() == [1, 0, 0]
    assert "1 rows list several images" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"test.csv: line 2: cannot parse image cell"):
        eval_image_paths(pd.Series(["['a.png'"]), tmp_path, csv)
