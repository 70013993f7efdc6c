"""shared.config: inheritance, overrides, and one clear error per mistake."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence, Union

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


def test_overlay_file_merges_where_it_stands_in_the_set_list(tmp_path):
    child = write(tmp_path / "child.yaml", "name: child\nepochs: 3\noptim: {lr: 2e-4, name: sgd}\n")
    overlay = write(tmp_path / "smoke.yaml", "epochs: 1\noptim: {lr: 1e-2}\n")
    cfg = load_config(Cfg, child, ["epochs=9", f"@{overlay}", "optim.name=adamw"])
    assert cfg.epochs == 1 and cfg.optim.lr == 1e-2 and cfg.optim.name == "adamw"   # nested keys merge
    write(overlay, "epochs: many\n")
    with pytest.raises(ConfigError, match="epochs.*smoke.yaml"):
        load_config(Cfg, child, [f"@{overlay}"])
    with pytest.raises(ConfigError, match="config file not found: .*nothere.yaml"):
        load_config(Cfg, child, [f"@{tmp_path / 'nothere.yaml'}"])


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


# ------------------------------------------------------------------ errors name the file or --set item that is wrong
def test_errors_name_the_base_file_or_the_set_item(tmp_path):
    write(tmp_path / "base.yaml", "name: b\noptim: {lr: 0.1, bogus: 1}\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\nname: c\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim.bogus' in \S*base.yaml;") as err:
        load_config(Cfg, child)
    assert "child.yaml" not in str(err.value)
    ok = write(tmp_path / "ok.yaml", "_base_: base.yaml\noptim: {lr: 0.2}\n")
    write(tmp_path / "base.yaml", "name: b\nepochs: three\n")
    with pytest.raises(ConfigError, match=r"key 'epochs' in \S*base.yaml: expected an integer"):
        load_config(Cfg, ok)
    write(tmp_path / "base.yaml", "name: b\n")
    for override, message in [("optim.bogus=1", "unknown key 'optim.bogus' in --set optim.bogus=1;"),
                              ("epochs=three", "key 'epochs' in --set epochs=three: expected an integer")]:
        with pytest.raises(ConfigError) as err:
            load_config(Cfg, child, [override])
        assert message in str(err.value) and "yaml" not in str(err.value)
    # a key the child replaces is the child's, even where the base had it too
    write(tmp_path / "base.yaml", "name: b\nepochs: 1\n")
    with pytest.raises(ConfigError, match=r"key 'epochs' in \S*bad_child.yaml"):
        load_config(Cfg, write(tmp_path / "bad_child.yaml", "_base_: base.yaml\nepochs: x\n"))


@pytest.mark.parametrize("text, overrides, message", [
    ("name: x\noptim: {lr: 0.1}\n", ["optim.lr.x=1"], "override 'optim.lr.x=1': 'optim.lr' is 0.1 (from c.yaml), not a mapping"),
    ("name: x\n", ["name.first=1"], "override 'name.first=1': 'name' is 'x' (from c.yaml), not a mapping"),
    ("name: x\n", ["optim.lr=0.2", "optim.lr.x=1"], "'optim.lr' is 0.2 (from --set optim.lr=0.2)"),
    ("name: x\n", ["epochs.x=1"], "key 'epochs' in --set epochs.x=1: expected an integer"),  # a default, not in YAML
    ("_base_:\nname: x\n", [], "key '_base_' in c.yaml: expected a file name"),
    ("_base_: [1]\nname: x\n", [], "key '_base_' in c.yaml: expected a file name"),
    ("name: x\n", ["classes=[a"], "--set classes=[a: invalid YAML value"),
])
def test_malformed_configs_are_config_errors(tmp_path, monkeypatch, text, overrides, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(Cfg, "c.yaml", overrides)
    assert message in str(err.value)


# ------------------------------------------------------------------------------------ str fields keep their text
@pytest.mark.parametrize("override, expected", [("name=2024", "2024"), ("name=001", "001"), ("name=off", "off"),
                                                ("name=1e-4", "1e-4"), ("weights=007", "007"), ("name=2024-01-31", "2024-01-31"),
                                                ("classes=[001, yes, a]", ["001", "yes", "a"])])
def test_str_fields_take_number_looking_values_as_text(override, expected):
    cfg = load_config(Cfg, None, ["name=x", override])
    key = override.split("=")[0]
    assert getattr(cfg, key) == expected


def test_str_fields_in_yaml_keep_their_source_text(tmp_path):
    cfg = load_config(Cfg, write(tmp_path / "c.yaml", "name: 001\nweights: 2024\nclasses: [007, off]\n"))
    assert (cfg.name, cfg.weights, cfg.classes) == ("001", "2024", ["007", "off"])
    with pytest.raises(ConfigError, match="key 'epochs'.*expected an integer"):  # only str fields take text
        load_config(Cfg, None, ["name=x", "epochs=off"])


# ------------------------------------------------------------------------------------------ Sequence, Optional
@dataclass
class Typed:
    ids: Sequence[int] = (1, 2)
    sizes: Optional[list[int]] = None
    either: Union[int, list[int]] = 0


def test_sequence_fields_are_checked():
    assert load_config(Typed, None, ["ids=[3, 4]"]).ids == (3, 4)
    with pytest.raises(ConfigError, match=r"key 'ids\[1\]' in --set ids=\[3, a\]: expected an integer"):
        load_config(Typed, None, ["ids=[3, a]"])
    with pytest.raises(ConfigError, match="key 'ids' .*expected a list"):
        load_config(Typed, None, ["ids=abc"])


def test_optional_and_union_errors_carry_the_inner_reason():
    with pytest.raises(ConfigError) as err:
        load_config(Typed, None, ["sizes=[1, x]"])
    assert "neither null nor a valid list[int]" in str(err.value)
    assert "key 'sizes[1]' in --set sizes=[1, x]: expected an integer, got 'x'" in str(err.value)
    with pytest.raises(ConfigError, match=r"matches none of Union\[int, list\[int\]\]: as int: expected an integer"):
        load_config(Typed, None, ["either=x"])
