"""chextriev.prepare on the synthetic twin: kept/excluded images, label policies, adjacency, errors, resume."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.data import imagenome
from shared.data._common import DataError
from shared.data.labels import IMAGENOME_ANATOMIES, IMAGENOME_FINDINGS

from chextriev.prepare import (Prepared, anatomy_labels, binarise_adjacency, cooccurrence, macro_jaccard, main,
                               prepare)


def test_prepared_layout_and_excluded(twin, prepared_dir):
    p = Prepared(prepared_dir)
    n = len(p.frame)
    assert p.boxes.shape == (n, 18, 4) and p.labels.shape == (n, 18, 9)
    assert set(p.frame["split"]) == {"train", "val", "test"}
    messy = json.loads((twin / "scene_graph_messy.json").read_text())
    dropped = messy["dropped_object"][0]
    excluded = pd.read_csv(prepared_dir / "excluded.csv")
    assert dropped in set(excluded["image_id"]) and dropped not in set(p.frame["image_id"])
    assert "trachea" in excluded.set_index("image_id").loc[dropped, "reason"]
    n_graphs = len(list((twin / "silver" / "scene_graph").glob("*_SceneGraph.json")))
    assert n + len(excluded) == n_graphs                      # nothing dropped silently
    # image labels = OR over anatomies; the truth file's yes-wins anatomy findings are reproduced
    assert (p.frame[IMAGENOME_FINDINGS].to_numpy() == p.labels.any(1)).all()
    truth = json.loads((twin / "truth.json").read_text())
    by_id = {k.rsplit("/", 1)[-1][:-4]: v for k, v in truth.items()}
    for r, image_id in enumerate(p.frame["image_id"]):
        expected = np.zeros((18, 9), dtype=np.uint8)
        for anatomy, findings in by_id[image_id].get("imagenome", {}).items():
            for f in findings:
                expected[IMAGENOME_ANATOMIES.index(anatomy), IMAGENOME_FINDINGS.index(f)] = 1
        assert (p.labels[r] == expected).all(), image_id             # yes wins, also over a later "no"
    # boxes are the scene graph's original-pixel boxes
    g = imagenome.read_scene_graph(twin / "silver" / "scene_graph" / f"{p.frame['image_id'].iloc[0]}_SceneGraph.json")
    assert np.allclose(p.boxes[0, 0], g.box_xywh(IMAGENOME_ANATOMIES[0]))
    rec = json.loads((prepared_dir / "records.jsonl").read_text().splitlines()[0])
    assert len(rec["annotations"]) == 18 and rec["annotations"][3]["category_id"] == 3
    assert p.adjacency.shape == (18, 18) and (np.diag(p.adjacency) == 1).all()
    assert (p.adjacency == p.adjacency.T).all()


def test_label_policies_yes_wins_vs_last_wins():
    g = imagenome.SceneGraph("x", "p", "s", "PA", boxes={}, attributes={
        "right lung": [("anatomicalfinding", "yes", "lung opacity"), ("anatomicalfinding", "no", "lung opacity"),
                       ("disease", "yes", "pneumonia")],
        "left lung": [("anatomicalfinding", "no", "atelectasis"), ("anatomicalfinding", "yes", "atelectasis")],
        "not an anatomy": [("disease", "yes", "pneumonia")]})
    yes = anatomy_labels(g, "yes_wins")
    last = anatomy_labels(g, "last_wins")
    lo, pn, at = (IMAGENOME_FINDINGS.index(f) for f in ("lung opacity", "pneumonia", "atelectasis"))
    assert yes[0, lo] == 1 and last[0, lo] == 0               # the original's bug: a later "no" wins
    assert yes[0, pn] == last[0, pn] == 1
    assert yes[7, at] == last[7, at] == 1
    assert yes.sum() == 3 and last.sum() == 2


def test_macro_jaccard_matches_sklearn():
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 2, 12), rng.integers(0, 2, 12)
        assert macro_jaccard(a, b) == pytest.approx(jaccard_score(a, b, average="macro", zero_division=0))
    ones = np.ones(5, dtype=int)
    assert macro_jaccard(ones, ones) == pytest.approx(jaccard_score(ones, ones, average="macro"))


def test_cooccurrence_adjacency_properties():
    labels = np.zeros((6, 18, 9), dtype=np.uint8)
    labels[:3, 0, 0] = labels[:3, 1, 0] = 1        # anatomies 0 and 1 always together
    labels[:3, 3, :] = 1                           # anatomy 3: every finding on images 0-2
    labels[3:, 2, :] = 1                           # anatomy 2: every finding on images 3-5 only
    score = cooccurrence(labels)
    assert score[2, 3] == pytest.approx(0.0)       # never agree on any finding
    assert score[0, 1] == pytest.approx(1.0)
    adj = binarise_adjacency(score)
    assert adj[0, 1] == 1 and adj[2, 3] == 0 and (np.diag(adj) == 1).all() and (adj == adj.T).all()


def test_rerun_is_identical_and_resumes(twin, prepared_dir, tmp_path):
    out = prepare(twin, twin, tmp_path / "again", workers=1)
    for name in ("boxes.npy", "labels.npy", "adjacency.npy"):
        assert np.array_equal(np.load(out / name), np.load(prepared_dir / name))
    # a partial run (chunks present, no meta.json) continues from its chunks
    (out / "meta.json").unlink()
    out2 = prepare(twin, twin, out, workers=1)
    assert np.array_equal(np.load(out2 / "labels.npy"), np.load(prepared_dir / "labels.npy"))


def test_clear_errors(tmp_path, capsys):
    assert main(["--mimic", str(tmp_path / "nope"), "--imagenome", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "MIMIC-CXR-JPG root not found" in capsys.readouterr().err
    with pytest.raises(DataError, match="scene_graph"):
        prepare(tmp_path, tmp_path, tmp_path / "o")
    with pytest.raises(DataError, match="chextriev.prepare"):
        Prepared(tmp_path)


def test_undecodable_image_follows_the_missing_rule(twin, prepared_dir, tmp_path, capsys):
    """--verify stops on an undecodable image naming it and --on-bad-image warn (one line, exit 2, nothing
    written); with warn it is excluded, counted and listed in excluded.csv, as a missing one is."""
    import shutil

    from shared.cli import run_cli

    root = tmp_path / "twin"
    shutil.copytree(twin, root)
    kept = Prepared(prepared_dir).frame.iloc[0]
    victim = root / Path(kept["path"]).relative_to(twin)
    victim.write_bytes(victim.read_bytes()[:60])
    argv = ["--mimic", str(root), "--imagenome", str(root), "--out", str(tmp_path / "out"), "--workers", "1"]
    assert run_cli("python -m chextriev.prepare", lambda: main([*argv, "--verify"])) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert victim.name in err and "--on-bad-image warn" in err
    assert not (tmp_path / "out" / "meta.json").exists()
    with pytest.warns(UserWarning, match="1 of .* cannot be decoded"):
        assert run_cli("python -m chextriev.prepare", lambda: main([*argv, "--on-bad-image", "warn"])) == 0
    out = Prepared(tmp_path / "out")
    reasons = pd.read_csv(tmp_path / "out" / "excluded.csv", dtype=str).set_index("image_id")["reason"]
    assert reasons[kept["image_id"]] == "image file undecodable"
    assert kept["image_id"] not in set(out.frame["image_id"])
    assert len(out.frame) == len(Prepared(prepared_dir).frame) - 1


def test_training_leaves_undecodable_images_out_of_every_array(prepared_dir, tmp_path):
    """Prepared.check_images (data.on_bad_image=warn) keeps frame, boxes and labels row-aligned."""
    p = Prepared(prepared_dir)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff broken")
    p.frame.loc[3, "path"] = str(broken)
    boxes, labels, ids = p.boxes.copy(), p.labels.copy(), p.frame["image_id"].tolist()
    assert p.check_images().frame.loc[3, "path"] == str(broken)        # not asked: nothing decoded
    with pytest.warns(UserWarning, match="1 of .* cannot be decoded"):
        p.check_images(on_bad_image="warn")
    keep = [i for i in range(len(ids)) if i != 3]
    assert p.frame["image_id"].tolist() == [ids[i] for i in keep]
    assert np.array_equal(p.boxes, boxes[keep]) and np.array_equal(p.labels, labels[keep])
