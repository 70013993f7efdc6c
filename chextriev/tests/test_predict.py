"""chextriev.index + chextriev.predict on the shipped real X-rays: a tiny random V6 over a tiny prepared twin."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shared.config import load_config
from shared.data import synthetic
from shared.data.labels import IMAGENOME_FINDINGS
from shared.tests.predict_contract import check_records, predict_json, save_run, user_images

from chextriev import index as chx_index
from chextriev.config import ChextrievConfig
from chextriev.models import build_model
from chextriev.predict import main
from chextriev.prepare import Prepared, prepare
from chextriev.train import load_adjacency


@pytest.fixture(scope="module")
def indexed_run(tmp_path_factory):
    """(run dir, index dir) of a random demo-shaped V6 (32 px crops) over a 24-image prepared twin."""
    tmp = tmp_path_factory.mktemp("chextriev_predict")
    twin = synthetic.generate("imagenome", tmp / "twin", n=24, size=64, seed=0)
    prepared = prepare(twin, twin, tmp / "prepared", workers=1)
    cfg = load_config(ChextrievConfig, "chextriev/configs/demo.yaml",
                      [f"data.prepared={prepared}", "data.crop_size=32", "data.feature_cache=false"])
    torch.manual_seed(0)
    run = save_run(tmp / "run", cfg, build_model(cfg.model, load_adjacency(cfg, Prepared(prepared))))
    assert chx_index.main(["build", "--run", str(run), "--out", str(tmp / "index")]) == tmp / "index"
    return run, tmp / "index"


def test_index_holds_every_prepared_image(indexed_run):
    run, index_dir = indexed_run
    index = chx_index.Index.load(index_dir)
    prepared = Prepared(json.loads((index_dir / "meta.json").read_text())["prepared"])
    assert len(index.frame) == len(prepared.frame) == index.meta["count"]
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    assert index.atlas.shape == (18, 4) and ((index.atlas >= 0) & (index.atlas <= 1)).all()


def test_predict_real_images(indexed_run, tmp_path, capsys):
    run, index_dir = indexed_run
    images = user_images(tmp_path / "in")
    records = predict_json(main, [*map(str, images.values()), "--run", str(run), "--index", str(index_dir),
                                  "--k", "3", "--out", str(tmp_path / "out")], capsys)
    check_records(records, "chextriev", list(IMAGENOME_FINDINGS), images)
    for r in records:
        sims = [n["similarity"] for n in r["neighbours"]]
        assert len(sims) == 3 and sims == sorted(sims, reverse=True) and r["panels"] == 4
        assert all(set(n["labels"]) <= set(IMAGENOME_FINDINGS) for n in r["neighbours"])


def test_index_of_other_weights_is_refused(indexed_run, tmp_path, capsys):
    run, index_dir = indexed_run
    cfg = load_config(ChextrievConfig, run / "config.yaml")
    torch.manual_seed(1)
    other = save_run(tmp_path / "other", cfg, build_model(cfg.model, None))
    image = user_images(tmp_path / "in")["00000001_000.png"]
    assert main([str(image), "--run", str(other), "--index", str(index_dir)]) == 2
    assert "was built with other weights" in capsys.readouterr().err
