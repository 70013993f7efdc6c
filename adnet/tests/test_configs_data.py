"""Configs, data settings, transforms, k-NN scoring and CLI errors (fast)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from shared.config import ConfigError, load_config
from shared.data import DataError
from shared.report import load_published

from adnet import train as adnet_train
from adnet import test as adnet_test
from adnet.config import ADNetConfig
from adnet.data import ALL_LABELS, all_union_labels, check_layout, eval_transform, label_names, train_transform
from adnet.knn import knn_scores
from adnet.model import MODEL_NAMES, parse_model_name

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SETTINGS = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith(("_", "base")))


@pytest.mark.parametrize("path", SETTINGS, ids=lambda p: p.stem)
def test_every_config_loads_and_matches_its_setting(path):
    cfg = load_config(ADNetConfig, path)
    assert cfg.name == path.stem
    n_labels = len(label_names(cfg.data))
    if path.stem == "demo":
        assert cfg.engine.device == "cpu" and cfg.model.pretrained_path is None
        return
    assert cfg.model.name in MODEL_NAMES and MODEL_NAMES[cfg.model.name] == n_labels
    published = load_published(CONFIGS.parent / "published.yaml")
    assert cfg.published_key in published, cfg.published_key
    assert cfg.engine.amp == "fp16" and cfg.optim.eps == 1e-6 and cfg.optim.weight_decay == 1e-4
    assert cfg.engine.seed == 42 and cfg.data.crop_pct == 0.95 and not cfg.data.honest_validation
    assert cfg.model.pretrained_path.endswith(("_IN1K.pth.tar", "_ALL.pth.tar"))
    backbone, _ = parse_model_name(cfg.model.name)
    assert Path(cfg.model.pretrained_path).name.startswith(backbone + "_ADNet_")


def test_recipe_values_of_spec_section_2():
    nih = load_config(ADNetConfig, CONFIGS / "nih_convnext.yaml")
    assert (nih.data.train_size, nih.data.test_size, nih.data.batch_size, nih.engine.epochs) == (352, 448, 30, 30)
    assert nih.data.repeats == 3 and nih.engine.ema_decay == 0.99995 and nih.optim.lr == 1e-4
    chex = load_config(ADNetConfig, CONFIGS / "chexpert_resnet50.yaml")
    assert chex.data.auto_augment == "rand-m9-mstd0.9" and chex.engine.ema_decay == 0.0
    assert chex.engine.val_every_iters == 200 and (chex.optim.lr, chex.optim.min_lr) == (5e-5, 5e-6)
    all_ = load_config(ADNetConfig, CONFIGS / "all_convnext.yaml")
    assert all_.data.dataset == "all" and all_.optim.lr == 4e-4 and all_.data.test_size == 416
    assert not all_.data.all_label_bugs


def test_recipe_mimic_all_and_common():
    mimic = load_config(ADNetConfig, CONFIGS / "mimic_convnext.yaml")
    assert (mimic.data.train_size, mimic.data.test_size, mimic.data.batch_size) == (320, 416, 32)
    assert (mimic.optim.lr, mimic.optim.min_lr, mimic.engine.ema_decay) == (1e-4, 1e-6, 0.9999)
    all_ = load_config(ADNetConfig, CONFIGS / "all_resnet50.yaml")
    assert (all_.data.train_size, all_.data.batch_size, all_.engine.epochs, all_.engine.ema_decay) == (352, 30, 30, 0.9999)
    assert len(label_names(all_.data)) == 21
    for path in SETTINGS:
        cfg = load_config(ADNetConfig, path)
        if path.stem == "demo":
            continue
        d, o = cfg.data, cfg.optim
        assert (tuple(o.betas), o.warmup_steps, cfg.engine.clip_grad_norm) == ((0.9, 0.999), 0, 0.0), path.stem
        assert (d.hflip, tuple(d.scale), d.re_prob, d.re_count, d.interpolation) == \
            (0.5, (0.08, 1.0), 0.2, 3, "bicubic"), path.stem
        assert d.auto_augment.startswith("rand-m9-mstd"), path.stem
        assert cfg.engine.ema_select == "best"          # raw and EMA both validated, the better one kept
        assert cfg.model.drop_path_rate == 0.0          # the original never applied its drop-path rate


def test_every_published_row_has_a_config():
    published = load_published(CONFIGS.parent / "published.yaml")
    keys = {load_config(ADNetConfig, p).published_key for p in SETTINGS}
    rows = [k for k, v in published.items() if isinstance(v, dict) and "metrics" in v]
    assert len(rows) == 9 and set(rows) <= keys


def test_nih_epoch_is_2876_iterations_of_30():
    """Repeated augmentation x3 keeps floor(86,524 / 256) * 256 = 86,272 samples; the last partial batch stays."""
    from torch.utils.data import DataLoader
    from shared.engine.data import ResumableSampler
    cfg = load_config(ADNetConfig, CONFIGS / "nih_convnext.yaml")
    sampler = ResumableSampler(86_524, repeats=cfg.data.repeats, world_size=1, rank=0)
    loader = DataLoader(range(86_524), batch_size=cfg.data.batch_size, sampler=sampler, drop_last=cfg.data.drop_last)
    assert len(sampler) == 86_272 and len(loader) == 2_876


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {CONFIGS / 'nih_convnext.yaml'}\ndata: {{datset: nih}}\n")
    with pytest.raises(ConfigError, match="datset"):
        load_config(ADNetConfig, bad)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_config(ADNetConfig, CONFIGS / "nih_convnext.yaml", ["data.honest_validation=true",
                                                                   "data.val_fraction=1.5"])
    with pytest.raises(SystemExit):
        adnet_train.main(["-cfg", str(bad)])
    with pytest.raises(ConfigError, match="REGEX=REPLACEMENT"):
        load_config(ADNetConfig, CONFIGS / "nih_convnext.yaml", ["model.pretrained_rename=[no_equals_sign]"])
    cfg = load_config(ADNetConfig, CONFIGS / "nih_convnext.yaml", ["model.pretrained_path=null"])
    assert cfg.model.pretrained_path is None


def test_missing_data_names_the_layout(tmp_path, capsys):
    rc = adnet_train.main(["-cfg", str(CONFIGS / "nih_convnext.yaml"), "--set", f"data.nih_root={tmp_path}/nope"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nope" in err and "train_val_list.txt" in err and "Data_Entry_2017" in err
    cfg = load_config(ADNetConfig, CONFIGS / "mimic_convnext.yaml", [f"data.mimic_root={tmp_path}"])
    with pytest.raises(DataError, match="testSet_SubjID.csv"):
        check_layout(cfg.data)


def test_missing_weights_are_clear_errors(tmp_path, capsys):
    rc = adnet_test.main(["-cfg", str(CONFIGS / "demo.yaml"), "--weights", str(tmp_path / "x.pth.tar")])
    assert rc == 2 and "x.pth.tar" in capsys.readouterr().err
    run = tmp_path / "run"   # --run alone: the run's config.yaml and checkpoints/best.pt
    run.mkdir()
    (run / "config.yaml").write_text((CONFIGS / "demo.yaml").read_text())
    (run / "base.yaml").write_text((CONFIGS / "base.yaml").read_text())   # demo.yaml's _base_
    rc = adnet_test.main(["--run", str(run)])
    assert rc == 2 and str(run / "checkpoints" / "best.pt") in capsys.readouterr().err
    with pytest.raises(SystemExit):   # neither --run nor --weights: a usage error
        adnet_test.main([])
    from adnet.evaluate import build_from_config
    cfg = load_config(ADNetConfig, CONFIGS / "demo.yaml", [f"model.pretrained_path={tmp_path}/IN1K.pth.tar"])
    with pytest.raises(FileNotFoundError, match="released weights"):
        build_from_config(cfg, 14)
    cfg = load_config(ADNetConfig, CONFIGS / "demo.yaml", [f"model.backbone_weights={tmp_path}/in1k.pth"])
    with pytest.raises(FileNotFoundError, match="model.backbone_weights not found.*in1k.pth"):
        build_from_config(cfg, 14)


def test_all_union_labels_fixed_and_original():
    nih = pd.DataFrame({"Effusion": [1.0, 0.0, 0.0], "Mass": [0.0, 1.0, 0.0], "Atelectasis": [0.0, 0.0, 0.0]})
    fixed = all_union_labels(nih, ["Effusion", "Mass", "Atelectasis"], {"Effusion": "Pleural Effusion"})
    assert list(fixed.columns) == ALL_LABELS and len(ALL_LABELS) == 21
    assert fixed["Pleural Effusion"].tolist() == [1, 0, 0] and fixed["Mass"].tolist() == [0, 1, 0]
    assert fixed["No Finding"].tolist() == [0, 0, 1]
    bugs = all_union_labels(nih, ["Effusion", "Mass", "Atelectasis"], {"Effusion": "Pleural Effusion"},
                            label_bugs=True)
    assert bugs["Mass"].tolist() == [0, 0, 0]                      # 'Mas' matched nothing
    assert bugs["No Finding"].tolist() == [1, 0, 0]                # inverted (Mass lost, so row 2 reads 0)
    devices = pd.DataFrame({"Support Devices": [1.0], "No Finding": [1.0]})
    assert all_union_labels(devices, ["Support Devices", "No Finding"], {})["No Finding"].item() == 1


def test_transforms():
    cfg = load_config(ADNetConfig, CONFIGS / "nih_convnext.yaml")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (520, 500), dtype=np.uint8)).convert("RGB")
    torch.manual_seed(0)
    assert train_transform(cfg.data)(img).shape == (3, 352, 352)
    tf = eval_transform(cfg.data)
    assert tf(img).shape == (3, 448, 448)
    assert tf.transforms[0].size == 471           # floor(448 / 0.95)
    assert eval_transform(cfg.data, 416).transforms[0].size == 437


@pytest.mark.parametrize("hparams, fill, resample, translate", [
    ("timm", (128, 128, 128), "random", 250),            # the original: rand_augment_transform(config, {})
    ("imagenet", (124, 116, 104), "bicubic", int(352 * 0.45)),   # ours before
])
def test_rand_augment_hparams(hparams, fill, resample, translate):
    from PIL.Image import Resampling
    from timm.data.auto_augment import RandAugment
    cfg = load_config(ADNetConfig, CONFIGS / "nih_convnext.yaml", [f"data.auto_augment_hparams={hparams}"])
    assert load_config(ADNetConfig, CONFIGS / "nih_convnext.yaml").data.auto_augment_hparams == "timm"
    rand_aug = next(t for t in train_transform(cfg.data).transforms if isinstance(t, RandAugment))
    for op in rand_aug.ops:
        assert op.kwargs["fillcolor"] == fill, op.name
        expected = (Resampling.BILINEAR, Resampling.BICUBIC) if resample == "random" else Resampling.BICUBIC
        assert op.kwargs["resample"] == expected, op.name
    assert rand_aug.ops[0].hparams["translate_const"] == translate


def test_knn_scores_are_exp_weighted_votes():
    sims = np.array([[0.9, 0.5, 0.1]], dtype=np.float32)
    nb = np.array([[2, 0, 1]])
    labels = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    w = np.exp(np.array([0.9, 0.5, 0.1]) / 0.5)
    expected = w[0] * labels[2] + w[1] * labels[0] + w[2] * labels[1]
    np.testing.assert_allclose(knn_scores(sims, nb, labels, 3, 0.5)[0], expected, rtol=1e-6)
    np.testing.assert_allclose(knn_scores(sims, nb, labels, 2, 0.5)[0], w[0] * labels[2] + w[1] * labels[0],
                               rtol=1e-6)
    np.testing.assert_allclose(knn_scores(sims, nb, labels, 3, 0.5, normalise=True)[0], expected / w.sum(),
                               rtol=1e-6)


def test_knn_threshold_rules():
    """original: a class is predicted when any neighbour carries it; vote_fraction: the weighted vote share."""
    from adnet.knn import threshold_scores
    sims = np.array([[0.9, 0.5, 0.1]], dtype=np.float32)
    nb = np.array([[0, 1, 2]])
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)   # class 1 only on the weakest
    orig = threshold_scores("original", sims, nb, labels, 3, 0.5)[0]
    np.testing.assert_array_equal(orig, [1.0, 1.0, 0.0])          # class 2: no neighbour -> not predicted
    frac = threshold_scores("vote_fraction", sims, nb, labels, 3, 0.5)[0]
    w = np.exp(np.array([0.9, 0.5, 0.1]) / 0.5)
    np.testing.assert_allclose(frac, [(w[0] + w[1]) / w.sum(), w[2] / w.sum(), 0.0], rtol=1e-6)
    assert frac[1] < 0.5 < orig[1]                                 # the two rules disagree on class 1
    assert load_config(ADNetConfig, None).eval.knn_threshold_rule == "original"


def test_mimic_images_are_squashed_like_the_originals_384_copies(tmp_path):
    """The original trained on MIMIC copies pre-squashed to 384 x 384: data.mimic_squash does it on the fly."""
    from shared.data import synthetic
    from adnet.data import build_frame, make_dataset
    root = synthetic.generate("mimic", tmp_path / "mimic", n=30, size=96, seed=0)
    subjects = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv", dtype=str)["subject_id"].unique()
    (tmp_path / "testSet_SubjID.csv").write_text("subject_id\n" + "\n".join(subjects[:3]) + "\n")
    sets = [f"data.mimic_root={root}", f"data.chexclusion_test_subjects={tmp_path / 'testSet_SubjID.csv'}"]
    cfg = load_config(ADNetConfig, CONFIGS / "mimic_convnext.yaml", sets)
    frame, labels = build_frame(cfg.data)
    assert labels == label_names(cfg.data) and (frame["squash"] == 384).all()
    assert set(frame.loc[frame.split == "test", "subject_id"].astype(str)) <= set(subjects[:3])
    squashed = make_dataset(frame, "train", labels, transform=None)
    assert squashed.load_array(0).shape == (384, 384)
    native = make_dataset(build_frame(load_config(ADNetConfig, CONFIGS / "mimic_convnext.yaml",
                                                  sets + ["data.mimic_squash=0"]).data)[0], "train", labels, None)
    assert native.load_array(0).shape != (384, 384)
