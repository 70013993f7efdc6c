"""CheXpert, MIMIC, ImaGenome and OpenI readers: label policies and errors on hand-written files, and a round
trip through the synthetic twin (the real layouts, with RGBA / 16-bit / EXIF / non-square images)."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.data import DataError, chexpert, imagenome, mimic, nih, openi
from shared.data.images import load_image
from shared.data.labels import CHEXPERT_COMPETITION, CHEXPERT_LABELS, IMAGENOME_FINDINGS, NIH_LABELS, MIMIC_LABELS


# ------------------------------------------------------------------------------------------- synthetic twin
@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    synthetic = pytest.importorskip("shared.data.synthetic")
    out = tmp_path_factory.mktemp("synthetic")
    return {layout: Path(synthetic.generate(layout, out / layout, n=24, size=32, seed=1))
            for layout in ("nih", "chexpert", "mimic", "imagenome", "openi")}


@pytest.mark.parametrize("layout", ["nih", "chexpert", "mimic", "imagenome", "openi"])
def test_synthetic_round_trip(synthetic_root, layout):
    root = synthetic_root[layout]
    reader = {"nih": nih.read_index, "chexpert": lambda r: chexpert.read_index(r, "all"),
              "mimic": mimic.read_index, "imagenome": imagenome.read_index, "openi": openi.read_reports}[layout]
    frame = reader(root)
    truth = json.loads((root / "truth.json").read_text())
    by_path = {str((root / rel).resolve()): rec for rel, rec in truth.items()}
    assert frame["path"].is_unique and set(frame["path"]) <= set(by_path)
    if layout != "imagenome":                      # ImaGenome has scene graphs for frontal images only
        assert set(frame["path"]) == set(by_path)
    for path in frame["path"]:
        rec = by_path[path]
        assert load_image(path).shape == (rec["height"], rec["width"]), (path, rec["messy"])
    if layout == "nih":
        for row in frame.itertuples(index=False):
            drawn = set(by_path[row.path]["findings"])
            assert {lab for lab in NIH_LABELS if getattr(row, lab) == 1} == drawn, row.image_id


# ------------------------------------------------------------------------------------------------ CheXpert
def _write_chexpert(root: Path, rows: list[tuple[str, str, dict]], name="train.csv") -> Path:
    base = root / "CheXpert-v1.0-small"
    base.mkdir(parents=True, exist_ok=True)
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + CHEXPERT_LABELS
    lines = [",".join(header)]
    for rel, kind, labels in rows:
        vals = ["" if labels.get(lab) is None else str(labels[lab]) for lab in CHEXPERT_LABELS]
        view = "AP" if kind == "Frontal" else ""
        lines.append(",".join([f"CheXpert-v1.0-small/{rel}", "Female", "50", kind, view] + vals))
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(b"")
    (base / name).write_text("\n".join(lines) + "\n")
    return base


def test_chexpert_policies(tmp_path):
    rows = [("train/patient00001/study1/view1_frontal.jpg", "Frontal", {"Edema": -1.0, "Cardiomegaly": -1.0}),
            ("train/patient00001/study1/view2_lateral.jpg", "Lateral", {"Edema": 1.0, "Atelectasis": 0.0}),
            ("train/patient00002/study1/view1_frontal.jpg", "Frontal", {"Atelectasis": -1.0})]
    base = _write_chexpert(tmp_path, rows)
    adnet = chexpert.read_index(tmp_path, labels=CHEXPERT_COMPETITION, frontal_only=True,
                                uncertain={"Edema": "ones", "Atelectasis": "ones"})
    assert adnet.attrs["excluded_lateral"] == 1 and len(adnet) == 2
    assert adnet.attrs["label_columns"] == CHEXPERT_COMPETITION
    assert adnet[CHEXPERT_COMPETITION].to_numpy().tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]]
    assert adnet["image_id"].iloc[0] == "train/patient00001/study1/view1_frontal.jpg"
    assert adnet["patient_id"].tolist() == ["patient00001", "patient00002"]
    assert adnet["study_id"].iloc[0] == "patient00001/study1" and adnet["split"].iloc[0] == "train"
    everything = chexpert.read_index(base, uncertain="ones", blank="keep")     # root = the dataset folder
    assert everything["view"].tolist() == ["AP", "Lateral", "AP"]
    assert everything.loc[0, "Cardiomegaly"] == 1 and np.isnan(everything.loc[0, "Fracture"])
    masked = chexpert.read_index(tmp_path, uncertain="ignore")
    assert np.isnan(masked.loc[0, "Edema"]) and masked.loc[2, "Fracture"] == 0
    assert chexpert.read_index(tmp_path, uncertain="keep").loc[0, "Edema"] == -1
    assert masked[CHEXPERT_LABELS].dtypes.eq(np.float32).all()


def test_chexpert_errors(tmp_path):
    base = _write_chexpert(tmp_path, [("train/patient00001/study1/view1_frontal.jpg", "Frontal", {"Edema": 2.0})])
    with pytest.raises(DataError, match=r"line 2, column 'Edema': value 2.0"):
        chexpert.read_index(tmp_path)
    _write_chexpert(tmp_path, [("train/patient00001/study1/view1_frontal.jpg", "Frontal", {"Edema": 1.0})])
    with pytest.raises(DataError, match="unknown label"):
        chexpert.read_index(tmp_path, labels=["Edemaa"])
    with pytest.raises(DataError, match="unknown label"):
        chexpert.read_index(tmp_path, uncertain={"Effusion": "ones"})
    with pytest.raises(ValueError, match="uncertain policy"):
        chexpert.read_index(tmp_path, uncertain="maybe")
    (base / "train" / "patient00001" / "study1" / "view1_frontal.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="view1_frontal.jpg"):
        chexpert.read_index(tmp_path)
    with pytest.warns(UserWarning, match="1 of 1"):
        assert len(chexpert.read_index(tmp_path, on_missing="warn")) == 0
    pd.read_csv(base / "train.csv").drop(columns=["AP/PA"]).to_csv(base / "train.csv", index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['AP/PA'\]"):
        chexpert.read_index(tmp_path, check_files=False)


def _xrv_data_file(name: str) -> Path:
    """A real metadata file shipped inside torchxrayvision (the dev extra installs it)."""
    xrv = pytest.importorskip("torchxrayvision", reason="torchxrayvision (which ships real CheXpert/OpenI "
                                                      "metadata) is not installed: pip install -e '.[dev]'")
    path = Path(xrv.__file__).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"{path} not shipped by this torchxrayvision version")
    return path


def test_chexpert_real_train_csv_from_torchxrayvision():
    csv = _xrv_data_file("chexpert_train.csv.gz")
    root = Path(pytest.importorskip("tempfile").mkdtemp())
    (root / "train.csv.gz").symlink_to(csv)
    frame = chexpert.read_index(root, check_files=False, uncertain="ones")
    raw = pd.read_csv(csv)
    assert len(frame) == len(raw) == 223_414
    for lab in CHEXPERT_LABELS:
        assert frame[lab].sum() == ((raw[lab] == 1) | (raw[lab] == -1)).sum(), lab
    frontal = chexpert.read_index(root, check_files=False, frontal_only=True)
    assert len(frontal) == (raw["Frontal/Lateral"] == "Frontal").sum()


# --------------------------------------------------------------------------------------------------- MIMIC
REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def _write_mimic(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = [("d1", "50000001", "10000032", "train", "PA"), ("d2", "50000001", "10000032", "train", "LATERAL"),
            ("d3", "50000002", "11000040", "validate", "AP"), ("d4", "50000003", "12000050", "test", "AP")]
    pd.DataFrame(rows, columns=["dicom_id", "study_id", "subject_id", "split", "v"]).drop(columns="v").to_csv(
        root / "mimic-cxr-2.0.0-split.csv", index=False)
    pd.DataFrame([(r[0], r[2], r[1], r[4], 10, 12) for r in rows],
                 columns=["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"]).to_csv(
        root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    labels = {lab: [np.nan, np.nan] for lab in MIMIC_LABELS}
    labels["Edema"], labels["Cardiomegaly"] = [-1.0, 1.0], [1.0, np.nan]
    table = pd.DataFrame({"subject_id": ["10000032", "11000040"], "study_id": ["50000001", "50000002"], **labels})
    table.to_csv(root / "mimic-cxr-2.0.0-negbio.csv", index=False)
    table.assign(Edema=[0.0, 0.0]).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    for d, st, s, _, _ in rows:
        img = Path(mimic.image_path(root, s, st, d))
        img.parent.mkdir(parents=True, exist_ok=True)
        img.write_bytes(b"")
        Path(mimic.report_path(root, s, st)).write_text(REPORT)
    return root


def test_mimic_index_and_policies(tmp_path):
    root = _write_mimic(tmp_path / "mimic")
    with pytest.warns(UserWarning, match="1 images .*no row in mimic-cxr-2.0.0-negbio.csv"):
        frame = mimic.read_index(root, uncertain="ones")
    assert frame["split"].tolist() == ["train", "train", "val", "test"]
    assert frame["view"].tolist() == ["PA", "LATERAL", "AP", "AP"]
    assert frame["path"].iloc[0].endswith("files/p10/p10000032/s50000001/d1.jpg")
    assert frame["patient_id"].iloc[0] == "10000032" and frame["image_id"].iloc[0] == "d1"
    assert frame["Edema"].tolist() == [1, 1, 1, 0] and frame["Cardiomegaly"].tolist() == [1, 1, 0, 0]
    assert frame.attrs["label_columns"] == MIMIC_LABELS and frame[MIMIC_LABELS].dtypes.eq(np.float32).all()
    with pytest.warns(UserWarning):
        zeros = mimic.read_index(root, uncertain="zeros", views=["PA", "AP"], test_subjects=["11000040"])
    assert zeros["Edema"].tolist() == [0, 1, 0] and zeros["split"].tolist() == ["train", "test", "train"]
    with pytest.warns(UserWarning):
        chex = mimic.read_index(root, labeler="chexpert", uncertain="ones")
    assert chex["Edema"].tolist() == [0, 0, 0, 0]
    with pytest.raises(DataError, match="no row"):
        mimic.read_index(root, missing_labels="error")
    with pytest.warns(UserWarning, match="dropped 1"):
        assert len(mimic.read_index(root, missing_labels="drop", with_reports=True)) == 3
    with pytest.warns(UserWarning):
        reports = mimic.read_index(root, with_reports=True)
    assert reports["impression"].iloc[0] == "No acute cardiopulmonary process."


def test_mimic_errors(tmp_path):
    root = _write_mimic(tmp_path / "mimic")
    Path(mimic.image_path(root, "11000040", "50000002", "d3")).unlink()
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match="d3.jpg"):
        mimic.read_index(root)
    with pytest.warns(UserWarning) as record:
        assert len(mimic.read_index(root, on_missing="warn")) == 3
    assert any("1 of 4 image files missing" in str(w.message) for w in record)
    with pytest.raises(DataError, match="unknown label"):
        mimic.read_index(root, labels=["Effusion"])
    table = pd.read_csv(root / "mimic-cxr-2.0.0-negbio.csv")
    table.loc[1, "Edema"] = 5
    table.to_csv(root / "mimic-cxr-2.0.0-negbio.csv", index=False)
    with pytest.raises(DataError, match=r"negbio.csv: line 3, column 'Edema'"):
        mimic.read_index(root, check_files=False)


def test_mimic_report_parsing(tmp_path):
    (tmp_path / "r.txt").write_text(REPORT)
    report = mimic.read_report(tmp_path / "r.txt")
    assert report["findings"].startswith("There is no focal consolidation, pleural effusion or pneumothorax. Bil")
    assert report["impression"] == "No acute cardiopulmonary process."
    assert mimic.longer_section(report) == report["findings"]
    # length, not alphabetical order: "Z" > "A..." alphabetically but is shorter
    assert mimic.longer_section({"findings": "A long findings section.", "impression": "Z"}) == \
        "A long findings section."
    only = mimic.parse_report(" IMPRESSION:  Small effusion.\n NOTIFICATION: called Dr. ___")
    assert only["findings"] == "" and only["impression"] == "Small effusion."
    assert only["sections"]["NOTIFICATION"] == "called Dr. ___"


# ---------------------------------------------------------------------------------------------- ImaGenome
def test_scene_graph_parse(tmp_path, synthetic_root):
    graph = {"image_id": "d9", "patient_id": 10000032, "study_id": 50000001, "viewpoint": "PA",
             "objects": [{"bbox_name": "right lung", "original_x1": 10, "original_y1": 20, "original_x2": 110,
                          "original_y2": 220, "x1": 1, "y1": 2, "x2": 11, "y2": 22},
                         {"bbox_name": "trachea", "x": 5, "y": 6, "width": 7, "height": 8}],
             "attributes": [{"bbox_name": "right lung",
                             "attributes": [["anatomicalfinding|yes|lung opacity"],
                                            ["anatomicalfinding|no|lung opacity", "nlp|yes|abnormal"]]}]}
    (tmp_path / "d9_SceneGraph.json").write_text(json.dumps(graph))
    g = imagenome.read_scene_graph(tmp_path / "d9_SceneGraph.json")
    assert g.image_id == "d9" and g.patient_id == "10000032" and g.view == "PA"
    assert g.boxes["right lung"] == (10, 20, 110, 220) and g.boxes_224["right lung"] == (1, 2, 11, 22)
    assert g.box_xywh("trachea") == (5, 6, 7, 8) and len(g.missing_anatomies) == 16
    assert g.attributes["right lung"] == [("anatomicalfinding", "yes", "lung opacity"),
                                          ("anatomicalfinding", "no", "lung opacity"), ("nlp", "yes", "abnormal")]
    graph["attributes"][0]["attributes"] = [["lung opacity"]]
    (tmp_path / "bad_SceneGraph.json").write_text(json.dumps(graph))
    with pytest.raises(DataError, match="bad_SceneGraph.json.*'lung opacity'"):
        imagenome.read_scene_graph(tmp_path / "bad_SceneGraph.json")

    frame = imagenome.read_index(synthetic_root["imagenome"], with_labels=True)
    assert frame.attrs["label_columns"] == IMAGENOME_FINDINGS and frame["n_anatomies"].max() == 18
    assert set(frame["split"]) <= {"train", "val", "test"} and frame["scene_graph"].map(lambda p: Path(p).exists()).all()
    messy = json.loads((synthetic_root["imagenome"] / "scene_graph_messy.json").read_text())
    if messy.get("dropped_object"):
        dicom, anatomy = messy["dropped_object"]
        row = frame.set_index("image_id").loc[dicom]
        assert row["n_anatomies"] == 17
        assert imagenome.read_scene_graph(row["scene_graph"]).missing_anatomies == [anatomy]
    for dicom, anatomy, finding in messy.get("yes_then_no") or []:
        if dicom in set(frame["image_id"]):        # yes wins at image level
            assert frame.set_index("image_id").loc[dicom, finding] == 1


# --------------------------------------------------------------------------------------------------- OpenI
XML = """<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR7"/><MedlineCitation><Article><Abstract>
<AbstractText Label="INDICATION">Chest  pain</AbstractText><AbstractText Label="FINDINGS"/>
<AbstractText Label="IMPRESSION">No acute
disease.</AbstractText></Abstract></Article></MedlineCitation><MeSH><major>normal</major></MeSH>
<parentImage id="CXR7_IM-0001-1001"><url>x.jpg</url></parentImage></eCitation>"""


def test_openi(tmp_path):
    (tmp_path / "ecgen-radiology").mkdir()
    (tmp_path / "ecgen-radiology" / "7.xml").write_text(XML)
    (tmp_path / "ecgen-radiology" / "8.xml").write_text(XML.replace("CXR7", "CXR8").replace(
        '<parentImage id="CXR8_IM-0001-1001"><url>x.jpg</url></parentImage>', ""))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "CXR7_IM-0001-1001.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"1 of 2 reports .* list no image.*CXR8"):   # never a silent drop
        frame = openi.read_reports(tmp_path)
    assert frame[["image_id", "report_id", "findings", "impression", "indication", "mesh"]].iloc[0].tolist() == [
        "CXR7_IM-0001-1001", "CXR7", "", "No acute disease.", "Chest pain", "normal"]
    assert frame.attrs["reports_without_images"] == ["CXR8"]
    with pytest.raises(DataError, match="1 of 2 reports"):
        openi.read_reports(tmp_path, without_images="error")
    assert openi.read_reports(tmp_path, per="report")["image_ids"].tolist() == [["CXR7_IM-0001-1001"], []]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("ecgen-radiology/7.xml")
        info.size = len(XML.encode())
        tar.addfile(info, io.BytesIO(XML.encode()))
    (tmp_path / "NLMCXR_reports.tgz").write_bytes(buf.getvalue())
    from_tgz = openi.read_reports(tmp_path, reports=tmp_path / "NLMCXR_reports.tgz")
    assert from_tgz["report_id"].tolist() == ["CXR7"]
    (tmp_path / "images" / "CXR7_IM-0001-1001.png").unlink()
    (tmp_path / "ecgen-radiology" / "8.xml").unlink()
    with pytest.raises(FileNotFoundError, match="CXR7_IM-0001-1001.png"):
        openi.read_reports(tmp_path)
    (tmp_path / "ecgen-radiology" / "9.xml").write_text("<eCitation><uId id='CXR9'/>")
    with pytest.raises(DataError, match="9.xml"):
        openi.read_reports(tmp_path, check_files=False)


def test_openi_real_reports_from_torchxrayvision(tmp_path):
    """The real NLMCXR report archive: 3,955 reports, 7,470 images, 104 reports without an image."""
    archive = _xrv_data_file("NLMCXR_reports.tgz")
    reports = openi.read_reports(tmp_path, reports=archive, per="report")
    assert len(reports) == 3_955 and reports["report_id"].is_unique
    with pytest.warns(UserWarning, match="104 of 3955 reports"):
        images = openi.read_reports(tmp_path, reports=archive, check_files=False)
    assert len(images) == 7_470 and images["image_id"].is_unique
    assert len(images.attrs["reports_without_images"]) == 104
    assert (images["impression"].str.len() > 0).mean() > 0.95
