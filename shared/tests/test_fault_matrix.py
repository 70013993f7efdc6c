"""The fault matrix of issue 17, for every method: each fault a user can cause ends with exit status 2 and one
``<prog>: error:`` line naming the cause (no traceback), and nothing written before is lost.

The CLIs run in-process through ``run_cli`` exactly as ``python -m <method>.train`` runs them (``cli_exit``), on
tiny synthetic twins; a training row takes one or two optimizer steps of the demo's tiny model.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from shared.cli import run_cli

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Method:
    name: str
    data: str                       # fixture holding this method's data root
    data_keys: tuple[str, ...]      # --set keys pointing at it
    runs_key: str
    short: tuple[str, ...]          # --set items: one or two optimizer steps
    test_argv: callable = None      # (config, weights, out) -> argv of <method>.test
    lr_keys: tuple[str, ...] = ("optim.lr",)
    train_flags: tuple[str, ...] = ("--no-test",)   # train only: the rows test what training does
    extra: tuple[str, ...] = field(default_factory=tuple)
    iters_key: str = "engine.max_iters"

    def config(self) -> str:
        return str(REPO / self.name / "configs" / "demo.yaml")

    def train_argv(self, root: Path, runs: Path, *items: str, flags: tuple[str, ...] = ()) -> list[str]:
        data = [f"{key}={root}" for key in self.data_keys]
        return ["-cfg", self.config(), *self.train_flags, *flags, "--set", *data, f"{self.runs_key}={runs}",
                *self.short, *self.extra, *items]


METHODS = {
    "adnet": Method("adnet", "nih", ("data.nih_root",), "runs_root", ("engine.max_iters=2", "engine.epochs=1"),
                    lambda cfg, w, out: ["-cfg", cfg, "--weights", str(w), "--run-dir", str(out)]),
    "ham": Method("ham", "nih", ("data.root",), "runs_root", ("engine.max_iters=2", "engine.epochs=1"),
                  lambda cfg, w, out: ["-cfg", cfg, "-w", str(w), "--out", str(out)]),
    "agcnn": Method("agcnn", "nih", ("data.root",), "runs",
                    ("train.mode=joint", "train.joint_stage.max_iters=2", "train.joint_stage.epochs=1",
                     "train.joint_stage.batch_size=4"),
                    lambda cfg, w, out: ["-cfg", cfg, "--weights", str(w), "--out", str(out)],
                    lr_keys=("train.joint_stage.lr",), iters_key="train.joint_stage.max_iters"),
    "chextriev": Method("chextriev", "prepared", ("data.prepared",), "runs_root",
                        ("engine.max_iters=2", "engine.epochs=1"),
                        lambda cfg, w, out: ["-cfg", cfg, "--run", str(out), "--checkpoint", str(w)]),
    "cxrclip": Method("cxrclip", "mimic", ("data.sources.0.root", "eval.retrieval_root", "eval.zeroshot_root"),
                      "output_root", ("engine.max_iters=2", "engine.epochs=1"),
                      lambda cfg, w, out: ["-cfg", cfg, "--weights", str(w)],
                      extra=("model.text.bert.hidden_size=32", "model.text.bert.num_hidden_layers=1",
                             "model.projection_dim=32", "data.image_size=32", "data.max_length=48")),
}
ALL = list(METHODS)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_traceback_env(monkeypatch):
    monkeypatch.delenv("CXR_TRACEBACK", raising=False)


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Tiny synthetic data per layout, generated on first use."""
    from shared.data.synthetic import generate
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            base = tmp_path_factory.mktemp(kind)
            if kind == "nih":
                made[kind] = generate("nih", base / "nih", n=80, size=64, seed=0)
            elif kind == "mimic":
                made[kind] = generate("mimic", base / "mimic", n=120, size=48, seed=1)
            elif kind == "imagenome":
                made[kind] = generate("imagenome", base / "imagenome", n=60, size=64, seed=3)
            else:
                from chextriev.prepare import prepare
                made[kind] = prepare(get("imagenome"), get("imagenome"), base / "prepared", workers=1)
        return made[kind]
    return get


def copy_of(twins, method: Method, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(twins(method.data), root)
    return root


def cli(method: str, entry: str, argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of ``python -m <method>.<entry> argv``."""
    module = importlib.import_module(f"{method}.{entry}")
    try:
        code = run_cli(f"python -m {method}.{entry}", lambda: module.main(argv))
    except SystemExit as exc:   # argparse's own usage errors
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_error_line(code: int, err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, err[-3000:]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


def images_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def data_images(name: str, root: Path, tmp_path: Path) -> list[Path]:
    """The images a copied data root lists, safe to damage. A CheXtriev prepared directory lists the images where
    they are (the shared twin): its index is pointed at copies of them first."""
    if name != "chextriev":
        return images_of(root)
    import pandas as pd
    index = pd.read_csv(root / "index.csv")
    images = [tmp_path / "images" / Path(p).name for p in index["path"]]
    (tmp_path / "images").mkdir()
    for src, dst in zip(index["path"], images):
        shutil.copy(src, dst)
    index["path"] = [str(p) for p in images]
    index.to_csv(root / "index.csv", index=False)
    return images


def training_image(name: str, root: Path, tmp_path: Path) -> Path:
    """An image of the data that training reads (CXR-CLIP reads only the train and validate splits)."""
    if name == "cxrclip":
        from cxrclip.data import mimic_samples
        return Path(mimic_samples(root, "train")[0].images[0])
    return data_images(name, root, tmp_path)[1]


# ------------------------------------------------------------------------------------------------- data faults
@pytest.mark.parametrize("name", ALL)
def test_bad_data_path(name, tmp_path, capsys):
    m = METHODS[name]
    code, err = cli(name, "train", m.train_argv(tmp_path / "absent", tmp_path / "runs"), capsys)
    assert_one_error_line(code, err, "absent")
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]   # no half-made run


@pytest.mark.parametrize("name", ALL)
def test_corrupt_image(name, twins, tmp_path, capsys):
    """Every image truncated: the first one read is named, in one line (whether found by the prepared cache, the
    verification or the loader)."""
    m = METHODS[name]
    root = copy_of(twins, m, tmp_path)
    for image in data_images(name, root, tmp_path):
        image.write_bytes(image.read_bytes()[:40])
    for cache in [*root.rglob("cache"), *root.rglob("feature_cache")]:   # a cache would hide the broken files
        shutil.rmtree(cache)
    code, err = cli(name, "train", m.train_argv(root, tmp_path / "runs"), capsys)
    assert_one_error_line(code, err, str(tmp_path), "cannot decode")


@pytest.mark.parametrize("name", ALL)
def test_missing_image(name, twins, tmp_path, capsys):
    """A listed image that is absent stops the reader (CheXtriev's: prepare) naming it and data.on_missing."""
    m = METHODS[name]
    if name == "chextriev":
        root = tmp_path / "imagenome"
        shutil.copytree(twins("imagenome"), root)
        victim = images_of(root)[0]
        victim.unlink()
        code, err = cli(name, "prepare", ["--mimic", str(root), "--imagenome", str(root), "--out",
                                          str(tmp_path / "prepared"), "--workers", "1"], capsys)
        assert_one_error_line(code, err, victim.name, "--on-missing")
        return
    root = copy_of(twins, m, tmp_path)
    victim = images_of(root)[0]
    victim.unlink()
    code, err = cli(name, "train", m.train_argv(root, tmp_path / "runs"), capsys)
    assert_one_error_line(code, err, victim.name, "data.on_missing=warn")


@pytest.mark.parametrize("name", ALL)
def test_verify_images_before_training(name, twins, tmp_path, capsys):
    """data.verify_images=true finds an undecodable image before any training step; data.on_bad_image=warn skips
    it (counted in the warning) and trains."""
    m = METHODS[name]
    root = copy_of(twins, m, tmp_path)
    victim = training_image(name, root, tmp_path)
    victim.write_bytes(victim.read_bytes()[:60])
    runs = tmp_path / "runs"
    code, err = cli(name, "train", m.train_argv(root, runs, "data.verify_images=true"), capsys)
    assert_one_error_line(code, err, victim.name, "data.on_bad_image=warn")
    assert not list(runs.rglob("*.pt"))
    with pytest.warns(UserWarning, match="1 of .* cannot be decoded"):
        code, err = cli(name, "train", m.train_argv(root, runs, "data.on_bad_image=warn"), capsys)
    assert code == 0, err[-2000:]


def _empty_evaluation_split(name: str, root: Path) -> None:
    """The split the method validates on (ADNet, HAM: the test list, faithfully) holds no image."""
    import pandas as pd
    if name in ("adnet", "ham", "agcnn"):
        (root / "test_list.txt").write_text("")
        return
    path, column, split = ((root / "mimic-cxr-2.0.0-split.csv", "split", "validate") if name == "cxrclip"
                           else (root / "index.csv", "split", "val"))
    frame = pd.read_csv(path, dtype=str)
    frame.loc[frame[column] == split, column] = "train"
    frame.to_csv(path, index=False)


@pytest.mark.parametrize("name", ALL)
def test_empty_split(name, twins, tmp_path, capsys):
    """Found before any training step: one line naming the empty split, and no run left behind with weights."""
    m = METHODS[name]
    root = copy_of(twins, m, tmp_path)
    _empty_evaluation_split(name, root)
    runs = tmp_path / "runs"
    code, err = cli(name, "train", m.train_argv(root, runs), capsys)
    line = assert_one_error_line(code, err)
    assert " empty" in line or " no " in line, line
    assert not list(runs.rglob("*.pt"))


# ------------------------------------------------------------------------------------------- checkpoint faults
def _checkpoint_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(3)}, "global_step": 1}, good)
    files = {"missing": tmp_path / "absent.pt", "truncated": tmp_path / "truncated.pt",
             "foreign": tmp_path / "foreign.pt", "pickled": tmp_path / "pickled.pt"}
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["foreign"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    torch.save({"model": {"w": torch.zeros(3)}, "args": argparse.Namespace(lr=1.0)}, files["pickled"])
    return files


@pytest.mark.parametrize("kind, needle", [("missing", "not found"), ("truncated", "truncated"),
                                          ("foreign", "truncated"), ("pickled", "pickled")])
@pytest.mark.parametrize("name", ALL)
def test_bad_weights_file(name, kind, needle, twins, tmp_path, capsys):
    m = METHODS[name]
    files = _checkpoint_files(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")          # an earlier result in the output folder
    before = {p: p.read_bytes() for p in files.values() if p.exists()}
    argv = m.test_argv(m.config(), files[kind], out)
    argv += ["--set", *[f"{key}={twins(m.data)}" for key in m.data_keys], *m.extra]
    code, err = cli(name, "test", argv, capsys)
    line = assert_one_error_line(code, err, needle, files[kind].name)
    if name == "cxrclip" and kind == "pickled":
        assert "--trust-checkpoint" in line
    assert {p: p.read_bytes() for p in before} == before and (out / "results.json").read_text() == "{}"


# ------------------------------------------------------------------------------------------------ run faults
@pytest.mark.parametrize("name", ALL)
def test_mistyped_resume_starts_nothing(name, twins, tmp_path, capsys):
    m = METHODS[name]
    runs = tmp_path / "runs"
    code, err = cli(name, "train", m.train_argv(twins(m.data), runs, flags=("--resume", str(runs / "typo"))),
                    capsys)
    assert_one_error_line(code, err, "typo")
    assert not runs.exists() or not any(runs.rglob("*.pt"))


@pytest.mark.parametrize("name", ALL)
def test_read_only_runs_root(name, twins, tmp_path, capsys, monkeypatch):
    """The runs root is on a read-only file system (simulated: tests may run as root, which ignores modes)."""
    m = METHODS[name]
    runs = tmp_path / "runs"
    real_mkdir = os.mkdir

    def read_only_mkdir(path, *args, **kwargs):
        if str(path).startswith(str(runs)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)
    monkeypatch.setattr(os, "mkdir", read_only_mkdir)
    code, err = cli(name, "train", m.train_argv(twins(m.data), runs), capsys)
    assert_one_error_line(code, err, str(runs), "read-only", m.runs_key)


@pytest.mark.parametrize("name", ALL)
def test_nan_loss_stops_in_one_line_and_keeps_the_log(name, twins, tmp_path, capsys):
    m = METHODS[name]
    runs = tmp_path / "runs"
    code, err = cli(name, "train", m.train_argv(twins(m.data), runs, f"{m.iters_key}=4",
                                                *[f"{key}=1.0e+30" for key in m.lr_keys]), capsys)
    line = assert_one_error_line(code, err, "non-finite")
    logs = list(runs.rglob("log.txt"))
    assert logs and any(line in log.read_text() for log in logs)     # the run records why it stopped
