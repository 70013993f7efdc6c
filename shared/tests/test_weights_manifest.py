"""`make weights` and the preflight of every reproduce target: one table of weight files, every missing one named in
one message, offline detected at once."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared import weights, weights_manifest as wm

REPO = Path(__file__).resolve().parents[2]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
MAKEFILE_DEFAULTS = dict(ADNET_WEIGHTS="weights", ADNET_BACKBONE="convnext", ADNET_IMAGENET="", ADNET_ALL_WEIGHTS="",
                         ADNET_SET="", HAM_FOLD="1", HAM_SET="", AGCNN_CONFIG="nih_resnet50", AGCNN_SET="",
                         CHEXTRIEV_WEIGHTS="weights", CHEXTRIEV_SET="", CXRCLIP_CONFIG="r50_m",
                         CXRCLIP_PROMPTS="pretrained/train_prompts_all.json")


def make(*args, timeout=60) -> subprocess.CompletedProcess:
    """`make ARGS` in the repository root, offline (no probe of the network), with this interpreter."""
    return subprocess.run(["make", "--no-print-directory", f"PY={sys.executable}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def variables(**changes) -> wm.Vars:
    return wm.Vars({**MAKEFILE_DEFAULTS, **{k: str(v) for k, v in changes.items()}})


@pytest.fixture
def empty_hub_caches(monkeypatch, tmp_path):
    """Nothing in the torch or Hugging Face hub cache, whatever this machine holds."""
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    monkeypatch.setattr(wm, "hf_cached", lambda repo: False)
    monkeypatch.setattr(weights, "hf_cached", lambda repo: False)


@pytest.fixture
def no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights, "network_reachable", lambda host, timeout=3.0: False)


@needs_make
def test_manifest_lists_every_reproduce_target_and_make_passes_every_variable():
    targets = make("-s", "print-smoke-targets").stdout.split()
    assert len(targets) == 34 and set(wm.MANIFEST) == set(targets)
    plan = make("-n", "weights").stdout
    assert "-m shared.weights_manifest list" in plan
    passed = re.findall(r" (\w+)='([^']*)'", plan)
    assert [name for name, _ in passed] == list(wm.VARIABLES)
    assert dict(passed) == MAKEFILE_DEFAULTS                 # what these tests assume are the Makefile's defaults


@needs_make
def test_every_target_checks_its_weights_first_and_smoke_checks_none(tmp_path):
    for target in wm.MANIFEST:
        plan = make("-n", target, f"DATA={tmp_path}").stdout
        lines = plan.splitlines()
        check = next(i for i, line in enumerate(lines) if "-m shared.weights_manifest check" in line)
        assert f"check {target} " in lines[check]
        assert not any(" -m " in line for line in lines[:check]), f"{target} runs something before its check"
        assert "weights_manifest" not in make("-n", target, "SMOKE=1", f"DATA={tmp_path}").stdout


@needs_make
def test_chextriev_all_variants_check_every_weight_file_at_once(tmp_path):
    proc = make("-s", "reproduce-chextriev-mimic-fixed", f"DATA={tmp_path}", f"CHEXTRIEV_WEIGHTS={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.startswith("reproduce-chextriev-mimic-resnet50 and 11 more targets: 2 of 2 weight files")
    assert "resnet50_imagenet.pth" in proc.stderr and "densenet121_imagenet.pth" in proc.stderr
    assert "weights_manifest" not in make("-n", "reproduce-chextriev-mimic", "SMOKE=1", f"DATA={tmp_path}").stdout


@pytest.mark.parametrize("backbone,target,config,name", [
    ("convnext", "reproduce-adnet-nih", "nih_convnext", "convnext_tiny_ADNet_IN1K.pth.tar"),
    ("resnet50", "reproduce-adnet-mimic", "mimic_resnet50", "resnet50_ADNet_IN1K.pth.tar"),
    ("convnext", "reproduce-adnet-chexpert", "chexpert_resnet50", "resnet50_ADNet_IN1K.pth.tar")])
@needs_make
def test_adnet_paths_are_the_ones_training_starts_from(tmp_path, backbone, target, config, name):
    [need] = wm.needs_of(target, variables(ADNET_WEIGHTS=tmp_path, ADNET_BACKBONE=backbone))
    assert need.path == f"{tmp_path}/{name}" and need.source.endswith("v0.0.1/" + name) and need.sha256 is None
    plan = make("-n", target, f"DATA={tmp_path}", f"ADNET_WEIGHTS={tmp_path}", f"ADNET_BACKBONE={backbone}").stdout
    train = next(line for line in plan.splitlines() if "-m adnet.train" in line)
    assert f"adnet/configs/{config}.yaml" in train and f"model.pretrained_path={need.path}" in train


@needs_make
def test_chextriev_paths_are_the_ones_training_reads(tmp_path):
    for config, arch in (("v6", "resnet50"), ("anaxnet-fixed", "densenet121")):
        [need] = wm.needs_of(f"reproduce-chextriev-mimic-{config}", variables(CHEXTRIEV_WEIGHTS=tmp_path))
        plan = make("-n", f"reproduce-chextriev-mimic-{config}", f"DATA={tmp_path}", f"CHEXTRIEV_WEIGHTS={tmp_path}")
        assert need.path == f"{tmp_path}/{arch}_imagenet.pth" and f"model.pretrained_path={need.path}" in plan.stdout
    assert wm.needs_of("reproduce-chextriev-mimic-ath", variables()) == []     # trained from scratch


def test_variables_choose_the_files(tmp_path):
    all_weights = tmp_path / "all.pth.tar"
    [need] = wm.needs_of("reproduce-adnet-all", variables(ADNET_ALL_WEIGHTS=all_weights))
    assert need.path == str(all_weights) and "ADNET_ALL_WEIGHTS" in need.set_by
    [need] = wm.needs_of("reproduce-adnet-nih", variables(ADNET_IMAGENET=tmp_path / "in.pth"))
    assert need.path == str(tmp_path / "in.pth") and "timm ImageNet state dict" in need.what
    assert wm.needs_of("reproduce-ham-nih", variables(HAM_SET="data.x=1 model.pretrained=false")) == []
    with pytest.raises(ValueError, match="nih_cls_fold9.yaml"):     # the target's own config is read
        wm.needs_of("reproduce-ham-nih", variables(HAM_FOLD="9"))
    [need] = wm.needs_of("reproduce-ham-chexpert", variables(HAM_SET=f"'model.pretrained_path={tmp_path}/r 50.pth'"))
    assert need.path == f"{tmp_path}/r 50.pth" and need.hub is None          # the *_SET words split as by the shell
    [need] = wm.needs_of("reproduce-agcnn-nih", variables(AGCNN_CONFIG="nih_densenet121"))
    assert need.hub == "hf:timm/densenet121.tv_in1k" and need.path is None
    [need] = wm.needs_of("reproduce-agcnn-nih", variables(AGCNN_SET="model.pretrained_tag="))   # timm's default
    assert need.hub == "hf:timm/resnet50.a1_in1k"
    swin = [n.path for n in wm.needs_of("reproduce-cxrclip-mimic", variables(CXRCLIP_CONFIG="swint_mcc"))]
    assert swin == ["pretrained/Bio_ClinicalBERT", "pretrained/swin-tiny-patch4-window7-224",
                    "pretrained/train_prompts_all.json"]


def test_check_names_exactly_the_missing_files_in_one_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)          # the configs' pretrained/... paths are read from the current folder
    (tmp_path / "pretrained" / "Bio_ClinicalBERT").mkdir(parents=True)
    (tmp_path / "pretrained" / "Bio_ClinicalBERT" / "config.json").write_text("{}")
    (tmp_path / "prompts.json").write_text("{}")
    v = variables(CXRCLIP_CONFIG="r50_mcc", CXRCLIP_PROMPTS=tmp_path / "prompts.json")
    assert wm.check(["reproduce-cxrclip-mimic"], v) == 2
    err = capsys.readouterr().err
    assert err.startswith("reproduce-cxrclip-mimic: 1 of 3 weight files missing")
    assert "not found: pretrained/resnet50-imagenet.pth" in err and "resnet50-0676ba61.pth" in err
    assert "Bio_ClinicalBERT" not in err and "prompts.json" not in err
    (tmp_path / "prompts.json").unlink()
    (tmp_path / "pretrained" / "Bio_ClinicalBERT" / "config.json").unlink()   # a folder without config.json
    assert wm.check(["reproduce-cxrclip-mimic"], v) == 2
    err = capsys.readouterr().err
    assert err.startswith("reproduce-cxrclip-mimic: 3 of 3") and err.count("\n  - ") == 3
    assert "has no config.json: pretrained/Bio_ClinicalBERT" in err and f"not found: {tmp_path}/prompts.json" in err
    (tmp_path / "pretrained" / "Bio_ClinicalBERT" / "config.json").write_text("{}")
    (tmp_path / "pretrained" / "resnet50-imagenet.pth").write_bytes(b"weights")
    (tmp_path / "prompts.json").write_text("{}")
    assert wm.check(["reproduce-cxrclip-mimic"], v) == 0 and capsys.readouterr().err == ""


def test_known_hashes(tmp_path, monkeypatch, capsys):
    weights_dir = tmp_path / "w"
    weights_dir.mkdir()
    (weights_dir / "resnet50_imagenet.pth").write_bytes(b"some weights")
    v = variables(CHEXTRIEV_WEIGHTS=weights_dir)
    [need] = wm.needs_of("reproduce-chextriev-mimic-v6", v)
    assert need.sha256 == "11ad3fa6" and need.source.endswith("/resnet50-11ad3fa6.pth")
    assert wm.sha256_of(weights_dir / "resnet50_imagenet.pth").startswith("a0c76a31")   # sha256(b"some weights")
    st = wm.status(need)
    assert st.ok and "not the download's 11ad3fa6" in st.text              # a re-saved state dict: fine
    monkeypatch.setattr(wm, "sha256_of", lambda path: "11ad3fa6" + "0" * 56)
    assert wm.status(need).ok and "verified" in wm.status(need).text
    monkeypatch.setattr(wm, "sha256_of", lambda path: "0676ba61" + "0" * 56)   # V1 where V2 is needed: named
    assert wm.check(["reproduce-chextriev-mimic-v6"], v) == 2
    err = capsys.readouterr().err
    assert "wrong file" in err and "ResNet-50 IMAGENET1K_V1" in err and "expected sha256 11ad3fa6" in err


def test_offline_fails_at_once_naming_the_key(empty_hub_caches, no_network, capsys, monkeypatch):
    import timm.models._builder as builder

    start = time.perf_counter()
    assert wm.check(["reproduce-agcnn-nih"], variables()) == 2
    assert wm.check(["reproduce-ham-nih"], variables()) == 2
    err = capsys.readouterr().err
    assert "AGCNN_SET=\"model.pretrained_path=FILE\"" in err and "HAM_SET=\"model.pretrained_path=FILE\"" in err
    assert "HF_HUB_OFFLINE=1" in err
    monkeypatch.setattr(builder, "load_pretrained", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(weights.PretrainedWeightsError, match=r"HF_HUB_OFFLINE=1 and timm/resnet50\.tv_in1k.*"
                                                             r"--set model\.pretrained_path=FILE"):
        weights.create_timm_model("resnet50.tv_in1k", pretrained=True, num_classes=0)
    assert time.perf_counter() - start < 1.0


def test_online_hub_weights_download_on_first_use(empty_hub_caches, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "network_reachable", lambda host, timeout=3.0: True)
    st = wm.status(wm.needs_of("reproduce-agcnn-nih", variables())[0])
    assert st.ok and "downloaded on first use" in st.text


def test_network_probe_is_bounded(monkeypatch):
    import socket

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(2) or socket.socket())
    start = time.perf_counter()
    assert weights.network_reachable.__wrapped__("unreachable.invalid", timeout=0.2) is False
    assert time.perf_counter() - start < 1.0


def test_cli_bad_input_is_one_line(capsys):
    assert wm.main(["check"]) == 2 and "usage:" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown target reproduce-adnet-nhi; known: reproduce-adnet-nih"):
        wm.main(["check", "reproduce-adnet-nhi", *[f"{k}={v}" for k, v in MAKEFILE_DEFAULTS.items()]])
    with pytest.raises(SystemExit, match="HAM_SET=it's: not valid shell words"):
        wm.needs_of("reproduce-ham-nih", variables(HAM_SET="it's"))
    with pytest.raises(SystemExit, match="variable AGCNN_CONFIG not given"):
        wm.main(["check", "reproduce-agcnn-nih", "AGCNN_SET="])
    assert wm.main(["list", *[f"{k}={v}" for k, v in {**MAKEFILE_DEFAULTS, "AGCNN_CONFIG": "nope"}.items()]]) == 2
    assert "agcnn/configs/nope.yaml" in capsys.readouterr().err


@needs_make
def test_make_weights_prints_the_table(tmp_path):
    (tmp_path / "resnet50_ADNet_IN1K.pth.tar").write_bytes(b"x")
    out = make("-s", "weights", f"ADNET_WEIGHTS={tmp_path}", "ADNET_BACKBONE=resnet50").stdout
    assert out.startswith("Weight files of every reproduce target")
    rows = dict(re.findall(r"^(reproduce-[\w-]+) +(\S+) ", out, re.M))
    assert set(rows) == set(wm.MANIFEST) and rows["reproduce-adnet-nih"] == "ok"
    assert rows["reproduce-chextriev-mimic-ath"] == "-"
    assert f"{tmp_path}/resnet50_ADNet_IN1K.pth.tar\n    the authors' whole-ADNet" in out
    assert "download: https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in out
