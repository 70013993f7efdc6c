"""shared.config: inheritance, overrides, and one clear error per mistake."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from shared.config import ConfigError, load_config, parse_config, save_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    name: Literal["adamw", "sgd"] = "adamw"


@dataclass
class Cfg:
    name: str
    epochs: int = 1
    classes: list[str] = field(default_factory=list)
    weights: Optional[str] = None
    amp: bool = False
    optim: Optim = field(default_factory=Optim)


def write(path, text):
    path.write_text(text)
    return path


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "name: base\nepochs: 3\noptim: {lr: 1e-4, name: sgd}\nclasses: [a, b]\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\nname: child\noptim: {lr: 2e-4}\n")
    cfg = load_config(Cfg, child, ["epochs=5", "optim.betas=[0.8, 0.9]", "weights=w.pt", "amp=true"])
    assert cfg.name == "child" and cfg.epochs == 5 and cfg.amp is True and cfg.weights == "w.pt"
    assert cfg.optim == Optim(lr=2e-4, betas=(0.8, 0.9), name="sgd")  # nested keys merge, 1e-4 is a float
    assert cfg.classes == ["a", "b"]


@dataclass
class Source:
    root: str = ""


@dataclass
class WithList:
    sources: list[Source] = field(default_factory=list)


def test_override_indexes_lists(tmp_path):
    path = write(tmp_path / "l.yaml", "sources: [{root: a}, {root: b}]\n")
    cfg = load_config(WithList, path, ["sources.1.root=/data/x"])
    assert [s.root for s in cfg.sources] == ["a", "/data/x"]
    with pytest.raises(ConfigError, match="not an index"):
        load_config(WithList, path, ["sources.5.root=y"])


def test_round_trip_through_saved_yaml(tmp_path):
    cfg = load_config(Cfg, write(tmp_path / "c.yaml", "name: x\noptim: {lr: 0.5}\n"))
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(Cfg, tmp_path / "saved.yaml") == cfg
    assert to_dict(cfg)["optim"]["betas"] == [0.9, 0.999]


@pytest.mark.parametrize("text, overrides, message", [
    ("name: x\nepoch: 3\n", [], "unknown key 'epoch'"),
    ("name: x\noptim: {lrr: 1}\n", [], "unknown key 'optim.lrr'"),
    ("name: x\nepochs: three\n", [], "key 'epochs'"),
    ("name: x\noptim: {name: adam}\n", [], "key 'optim.name'"),
    ("name: x\n", ["optim.lr=fast"], "key 'optim.lr'"),
    ("epochs: 2\n", [], "missing required key 'name'"),
    ("name: x\n", ["nonsense"], "must look like key.sub=value"),
])
def test_errors_name_the_key_and_file(tmp_path, text, overrides, message):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, path, overrides)
    assert message in str(err.value)
    if not overrides:
        assert "bad.yaml" in str(err.value)


@dataclass
class Checked:
    epochs: int = 1

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError("epochs must be >= 0")


@dataclass
class Outer:
    train: Checked = field(default_factory=Checked)


def test_schema_checks_become_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"section 'train' in .*neg.yaml: epochs must be >= 0"):
        load_config(Outer, write(tmp_path / "neg.yaml", "train: {epochs: -1}\n"))


def test_missing_file_and_circular_base(tmp_path):
    with pytest.raises(ConfigError, match="not found: .*nope.yaml"):
        load_config(Cfg, tmp_path / "nope.yaml")
    write(tmp_path / "a.yaml", "_base_: b.yaml\nname: a\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(Cfg, tmp_path / "a.yaml")


def test_cli_turns_config_errors_into_one_line(tmp_path, capsys):
    path = write(tmp_path / "c.yaml", "name: x\n")
    cfg, args = parse_config(Cfg, ["-cfg", str(path), "--set", "epochs=7", "optim.lr=0.1"])
    assert cfg.epochs == 7 and cfg.optim.lr == 0.1
    with pytest.raises(SystemExit):
        parse_config(Cfg, ["-cfg", str(path), "--set", "bogus=1"])
    assert "unknown key 'bogus'" in capsys.readouterr().err
