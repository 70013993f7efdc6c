"""The synthetic twin: deterministic, every layout written as the real one, findings drawn where their boxes say,
messy files that decode right, and (through the real readers) the expected rows and labels."""
from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from shared.data import synthetic as syn
from shared.data.labels import CHEXPERT_LABELS, IMAGENOME_ANATOMIES, IMAGENOME_FINDINGS, MIMIC_LABELS, NIH_LABELS

N, SIZE = 40, 64


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    base = tmp_path_factory.mktemp("twin")
    return {lay: syn.generate(lay, base / lay, n=N, size=SIZE, seed=3) for lay in syn.LAYOUTS}


def _tree_digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _truth(root):
    return json.loads((root / "truth.json").read_text())


# --------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = syn.generate("nih", tmp_path / "a", n=12, size=48, seed=7)
    b = syn.generate("nih", tmp_path / "b", n=12, size=48, seed=7)
    c = syn.generate("nih", tmp_path / "c", n=12, size=48, seed=8)
    da, db, dc = _tree_digest(a), _tree_digest(b), _tree_digest(c)
    assert da == db
    assert da != dc
    # parallel rendering writes the same bytes as serial
    d = syn.generate("nih", tmp_path / "d", n=12, size=48, seed=7, workers=2)
    assert _tree_digest(d) == da


def test_cli_and_is_complete(tmp_path):
    syn.main(["--layout", "openi", "--out", str(tmp_path / "o"), "--n", "5", "--size", "40", "--seed", "1"])
    assert syn.is_complete(tmp_path / "o", "openi", 5, 40, 1)
    assert not syn.is_complete(tmp_path / "o", "openi", 6, 40, 1)
    with pytest.raises(ValueError, match="unknown layout"):
        syn.generate("padchest", tmp_path / "p")


# --------------------------------------------------------------------------------------------- layouts
def test_every_layout_writes_the_contract_files(twins):
    nih = twins["nih"]
    for f in ("Data_Entry_2017.csv", "BBox_List_2017.csv", "train_val_list.txt", "test_list.txt",
              "README.txt", "messy.json", "truth.json", ".complete"):
        assert (nih / f).is_file(), f
    assert len(list((nih / "images").glob("*.png"))) == N
    chx = twins["chexpert"] / "CheXpert-v1.0-small"
    train, valid = pd.read_csv(chx / "train.csv"), pd.read_csv(chx / "valid.csv")
    assert list(train.columns) == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + CHEXPERT_LABELS
    assert len(train) + len(valid) == N and len(valid) > 0
    assert all((twins["chexpert"] / p).is_file() for p in pd.concat([train, valid])["Path"])
    assert set(train["Frontal/Lateral"]) == {"Frontal", "Lateral"}
    assert set(np.unique(train[CHEXPERT_LABELS].to_numpy()[~np.isnan(train[CHEXPERT_LABELS].to_numpy())])) <= \
        {1.0, 0.0, -1.0}
    assert not valid[CHEXPERT_LABELS].isna().any().any() and not (valid[CHEXPERT_LABELS] == -1).any().any()
    for lay in ("mimic", "imagenome"):
        root = twins[lay]
        meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv", dtype={"dicom_id": str})
        split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv", dtype={"dicom_id": str})
        assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
        assert set(split["split"]) <= {"train", "validate", "test"}
        assert list(meta.columns[:7]) == ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                                          "ViewPosition", "Rows", "Columns"]
        assert len(meta) == N
        for name in ("chexpert", "negbio"):
            lab = pd.read_csv(root / f"mimic-cxr-2.0.0-{name}.csv")
            assert list(lab.columns) == ["subject_id", "study_id"] + MIMIC_LABELS
            assert set(lab["study_id"]) == set(meta["study_id"])
        for r in meta.itertuples():
            s = str(r.subject_id)
            img = root / f"files/p{s[:2]}/p{s}/s{r.study_id}/{r.dicom_id}.jpg"
            assert img.is_file()
            assert (root / f"files/p{s[:2]}/p{s}/s{r.study_id}.txt").is_file()
            with Image.open(img) as im:
                w, h = ImageOps.exif_transpose(im).size
            assert (h, w) == (r.Rows, r.Columns)
    sg = twins["imagenome"] / "silver" / "scene_graph"
    meta = pd.read_csv(twins["imagenome"] / "mimic-cxr-2.0.0-metadata.csv", dtype={"dicom_id": str})
    frontal = meta[meta["ViewPosition"] != "LATERAL"]["dicom_id"]
    assert sorted(p.name for p in sg.glob("*.json")) == sorted(f"{d}_SceneGraph.json" for d in frontal)
    xmls = list((twins["openi"] / "ecgen-radiology").glob("*.xml"))
    assert xmls and len(list((twins["openi"] / "images").glob("*.png"))) == N


def test_nih_twin_through_the_real_reader(twins):
    from shared.data import nih
    root = twins["nih"]
    frame = nih.read_index(root)
    truth = _truth(root)
    assert len(frame) == N and frame.attrs["label_columns"] == NIH_LABELS
    assert set(frame["split"]) == {"train", "test"}
    # patient-disjoint lists
    assert not set(frame[frame.split == "train"].patient_id) & set(frame[frame.split == "test"].patient_id)
    assert frame.groupby("patient_id").size().max() > 1
    for row in frame.itertuples():
        rec = truth[f"images/{row.image_id}"]
        assert [lab for lab in NIH_LABELS if frame.at[row.Index, lab] == 1.0] == \
            [f for f in rec["findings"] if f in NIH_LABELS]
    boxes = nih.read_boxes(root)
    assert len(boxes) > 0 and set(boxes["label"]) <= set(syn.NIH_BOX_LABELS)
    assert "Infiltrate" in (root / "BBox_List_2017.csv").read_text() or "Infiltration" not in set(boxes["label"])
    for b in boxes.itertuples():
        rec = truth[f"images/{b.image_id}"]
        assert any(l["finding"] == b.label and np.allclose(l["box"], [b.x, b.y, b.w, b.h], atol=0.01)
                   for l in rec["lesions"])


def test_label_prevalence_is_measurable():
    """Every class in >= 8% of 200 images (the NIH generator's own draw), ~40% without a finding."""
    deck = syn._deck(0, "nih")
    draws = [syn._draw_case_findings(np.random.default_rng([0, 1, 1, i]), deck) for i in range(200)]
    prevalence = {lab: np.mean([lab in d for d in draws]) for lab in NIH_LABELS}
    assert min(prevalence.values()) >= 0.08, prevalence
    assert 0.3 <= np.mean([not d for d in draws]) <= 0.5


# --------------------------------------------------------------------------------------------- localisation
@pytest.mark.parametrize("finding", [f for f in syn.FINDINGS if f != "Emphysema"])
def test_each_finding_is_drawn_inside_its_box(finding):
    """Render the same anatomy with and without the finding: the change lies inside the true box."""
    g0 = syn._make_geometry(np.random.default_rng(5), [])
    g1 = syn._make_geometry(np.random.default_rng(5), [finding])
    if finding not in ("Cardiomegaly", "Enlarged_CM"):
        g0 = g1
    H = W = 96
    img0, _ = syn.render_frontal(np.random.default_rng(11), g0, [], H, W)
    img1, lesions = syn.render_frontal(np.random.default_rng(11), g1, [finding], H, W)
    diff = np.abs(img1.astype(np.float32) - img0.astype(np.float32))
    inside = np.zeros((H, W), bool)
    for les in lesions:
        x, y, w, h = syn._px_box(les.box, H, W)
        inside[int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))] = True
    assert lesions and inside.any()
    assert diff[inside].mean() > 4 * diff[~inside].mean() + 2, (diff[inside].mean(), diff[~inside].mean())


def test_emphysema_makes_the_lungs_darker():
    g = syn._make_geometry(np.random.default_rng(5), [])
    ge = syn._make_geometry(np.random.default_rng(5), ["Emphysema"])
    img0, _ = syn.render_frontal(np.random.default_rng(1), g, [], 96, 96)
    img1, _ = syn.render_frontal(np.random.default_rng(1), ge, ["Emphysema"], 96, 96)
    x0, y0, x1, y1 = (int(v * 96) for v in g.lung_box("R"))
    assert img1[y0 + 10:y1 - 10, x0 + 5:x1 - 5].mean() < img0[y0 + 10:y1 - 10, x0 + 5:x1 - 5].mean() - 15


def test_written_boxes_mark_where_the_pattern_is(twins):
    """In the written twin, a bright lesion's box is brighter than the same box in the images without any
    finding, a pneumothorax box darker; an enlarged heart's box is wider than every normal heart's."""
    from shared.data.images import load_image
    root = twins["nih"]
    truth = _truth(root)
    imgs = {rel: load_image(root / rel).astype(np.float32) for rel in truth}
    normal = [imgs[rel] for rel, rec in truth.items() if not rec["findings"] and rec["messy"] != "nonsquare"]
    assert len(normal) >= 5
    checked = 0
    hearts = {True: [], False: []}
    for rel, rec in truth.items():
        img = imgs[rel]
        H, W = img.shape
        hearts["Cardiomegaly" in rec["findings"]].append(rec["anatomy"]["cardiac silhouette"][2] / W)
        if rec["messy"] == "nonsquare":
            continue
        for les in rec["lesions"]:
            if les["finding"] not in ("Nodule", "Mass", "Atelectasis", "Effusion", "Pneumothorax", "Hernia"):
                continue
            x, y, w, h = les["box"]
            box = (slice(int(y), int(np.ceil(y + h))), slice(int(x), int(np.ceil(x + w))))
            delta = img[box].mean() - np.mean([n[box].mean() for n in normal])
            if les["finding"] == "Pneumothorax":
                assert delta < -10, (rel, les, delta)
            elif les["finding"] == "Hernia":
                assert img[box].std() > 20, (rel, les)   # air above, fluid below
            else:
                assert delta > 10, (rel, les, delta)
            checked += 1
    assert checked >= 5
    assert min(hearts[True]) > max(hearts[False])


def test_anatomy_boxes_are_consistent(twins):
    for rec in _truth(twins["nih"]).values():
        a = rec["anatomy"]
        assert list(a) == IMAGENOME_ANATOMIES
        for side in ("right", "left"):
            lx, ly, lw, lh = a[f"{side} lung"]
            for z in ("apical zone", "upper lung zone", "mid lung zone", "lower lung zone"):
                x, y, w, h = a[f"{side} {z}"]
                assert lx - 1 <= x and x + w <= lx + lw + 1 and ly - 1 <= y and y + h <= ly + lh + 1
        assert a["right lung"][0] < a["left lung"][0]           # patient's right = image left
        assert a["trachea"][1] < a["cardiac silhouette"][1]
        for les in rec["lesions"]:
            if les["side"] in ("R", "L"):
                lung = a["right lung" if les["side"] == "R" else "left lung"]
                cx = les["box"][0] + les["box"][2] / 2
                assert lung[0] - 0.1 * lung[2] <= cx <= lung[0] + 1.1 * lung[2], les


# --------------------------------------------------------------------------------------------- messy files
def test_messy_files_are_present_and_decode_right(twins):
    from shared.data.images import load_image
    seen = set()
    for lay, root in twins.items():
        messy = json.loads((root / "messy.json").read_text())
        assert set(messy) <= {"rgba", "16bit", "nonsquare", "exif"}
        readme = (root / "README.txt").read_text()
        truth = _truth(root)
        for kind, rel in messy.items():
            seen.add(kind)
            assert rel in readme
            rec = truth[rel]
            arr = load_image(root / rel)
            assert arr.dtype == np.uint8 and arr.shape == (rec["height"], rec["width"])
            with Image.open(root / rel) as im:
                raw = np.asarray(im)
                if kind == "rgba":
                    assert im.mode == "RGBA" and (raw[..., 3] == 255).all()
                    assert np.array_equal(arr, raw[..., 0])
                elif kind == "16bit":
                    assert raw.dtype in (np.uint16, np.int32) and raw.max() > 255
                    assert (raw.astype(np.int64) % 257 == 0).all()
                    assert np.corrcoef(arr.ravel(), (raw >> 8).ravel())[0, 1] > 0.999
                elif kind == "nonsquare":
                    assert arr.shape[0] == round(1.25 * arr.shape[1])
                elif kind == "exif":
                    assert im.getexif().get(0x0112) == 6
                    stored = np.asarray(im.convert("L"))

                    def heart_brighter(a):
                        c, l = rec["anatomy"]["cardiac silhouette"], rec["anatomy"]["right lung"]
                        box = lambda b: a[int(b[1]):int(b[1] + b[3]), int(b[0]):int(b[0] + b[2])].mean()
                        return box(c) > box(l) + 30
                    assert heart_brighter(arr) and not heart_brighter(stored)
    assert seen == {"rgba", "16bit", "nonsquare", "exif"}


# --------------------------------------------------------------------------------------------- reports, scene graphs
def test_mimic_reports_agree_with_the_labels(twins):
    root = twins["mimic"]
    lab = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv")
    n_impression_only = 0
    for r in lab.itertuples(index=False):
        s = str(r.subject_id)
        text = (root / f"files/p{s[:2]}/p{s}/s{r.study_id}.txt").read_text()
        assert "IMPRESSION:" in text
        n_impression_only += "FINDINGS:" not in text
        if "FINDINGS:" not in text:
            continue
        findings = text.split("FINDINGS:")[1].split("IMPRESSION:")[0].lower()
        eff = getattr(r, "_11")   # Pleural Effusion (alphabetical column 10 after the two ids)
        assert lab.columns[11] == "Pleural Effusion"
        if eff == 1.0:
            assert re.search(r"there (is a|are) .*pleural effusion", findings)
        elif eff == -1.0:
            assert "possible" in findings and "pleural effusion" in findings
        elif eff == 0.0:
            assert "no pleural effusion." in findings
        else:
            assert "pleural effusion" not in findings
        ptx = r.Pneumothorax
        assert (ptx == 0.0) == ("no pneumothorax." in findings)
    assert n_impression_only < len(lab)


def test_imagenome_scene_graphs(twins):
    root = twins["imagenome"]
    truth = _truth(root)
    by_id = {r["image_id"]: r for r in truth.values()}
    messy = json.loads((root / "scene_graph_messy.json").read_text())
    n_yes = 0
    for p in (root / "silver" / "scene_graph").glob("*_SceneGraph.json"):
        g = json.loads(p.read_text())
        d = g["image_id"]
        assert p.name == f"{d}_SceneGraph.json"
        names = [o["bbox_name"] for o in g["objects"]]
        if messy["dropped_object"] and d == messy["dropped_object"][0]:
            assert len(names) == 17
        else:
            assert sorted(names) == sorted(IMAGENOME_ANATOMIES)
        for o in g["objects"]:
            assert o["original_x2"] > o["original_x1"] and o["original_y2"] > o["original_y1"]
            assert 0 <= o["x1"] <= o["x2"] <= 224 and o["width"] == o["x2"] - o["x1"] or abs(
                o["width"] - (o["x2"] - o["x1"])) <= 1
        rec = by_id[d]
        yes = {}
        for att in g["attributes"]:
            for phrase in att["attributes"]:
                for s in phrase:
                    cat, verdict, finding = s.split("|")
                    assert verdict in ("yes", "no")
                    if verdict == "yes" and finding in IMAGENOME_FINDINGS:
                        yes.setdefault(att["bbox_name"], set()).add(finding)
        assert {a: sorted(v) for a, v in yes.items()} == rec["imagenome"]
        n_yes += sum(len(v) for v in yes.values())
        for f, anatomy in (("Effusion", "costophrenic angle"), ("Cardiomegaly", "cardiac silhouette"),
                           ("Pneumothorax", "apical zone")):
            if f in rec["findings"]:
                assert any(a.endswith(anatomy) for a in rec["imagenome"]), (f, rec["imagenome"])
    assert n_yes > 0


def test_openi_xml_reports(twins):
    root = twins["openi"]
    for p in (root / "ecgen-radiology").glob("*.xml"):
        tree = ET.parse(p)
        labels = {a.get("Label"): (a.text or "") for a in tree.iter("AbstractText")}
        assert {"FINDINGS", "IMPRESSION"} <= set(labels)
        assert labels["IMPRESSION"]
        ids = [e.get("id") for e in tree.iter("parentImage")]
        assert ids and all((root / "images" / f"{i}.png").is_file() for i in ids)
