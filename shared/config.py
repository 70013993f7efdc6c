"""YAML -> typed (dataclass) configuration.

One published setting = one short YAML file that inherits from a base with ``_base_`` and overrides a few keys;
``--set a.b=c`` overrides anything from the command line. A config is validated against a dataclass schema:
an unknown key, a value of the wrong type, a missing required key or a missing file is a :class:`ConfigError`
that names the key and the file.

    cfg = load_config(TrainConfig, "adnet/configs/nih_convnext.yaml", ["optim.lr=2e-4"])
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

T = TypeVar("T")
BASE_KEY = "_base_"


class ConfigError(ValueError):
    """A configuration problem, with the key and file it concerns in the message."""


# ----------------------------------------------------------------------------------------------- YAML tree
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``; people write ``1e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict, update: dict) -> dict:
    """Return ``base`` updated by ``update``; nested mappings merge, everything else is replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read ``path`` and its ``_base_`` chain (a path or list of paths relative to the file), merged in order."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular _base_ chain: {' -> '.join(map(str, _seen + (path,)))}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = deep_merge(merged, load_yaml_tree(path.parent / base, _seen + (path,)))
    return deep_merge(merged, data)


def apply_overrides(tree: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b=c`` strings; values are parsed as YAML (``1e-4`` -> float, ``[1,2]`` -> list, ``null``)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
        tree = _set_path(tree, key.split("."), value, item)
    return tree


def _set_path(node, parts: list[str], value: Any, item: str):
    """Copy-on-write set of ``value`` at ``parts``; a digit part indexes a list (``data.sources.0.root=...``)."""
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if not head.isdigit() or int(head) >= len(node):
            raise ConfigError(f"override {item!r}: {head!r} is not an index of a list of {len(node)} items")
        node = list(node)
        node[int(head)] = _set_path(node[int(head)], rest, value, item) if rest else value
        return node
    node = dict(node or {})
    node[head] = _set_path(node.get(head) or {}, rest, value, item) if rest else value
    return node


# ------------------------------------------------------------------------------------------- validation
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against annotation ``tp`` (recursively) and return it, converted where lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    where = f"key '{key}'" + (f" in {source}" if source else "")

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} matches none of {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, key, source)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        val_tp = args[1] if args else Any
        return {k: _coerce(v, val_tp, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _build(schema: type[T], data: dict, prefix: str, source: str) -> T:
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    hints = typing.get_type_hints(schema)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        names = ", ".join(f"'{prefix + '.' if prefix else ''}{k}'" for k in unknown)
        raise ConfigError(f"unknown key {names}" + (f" in {source}" if source else "")
                          + f"; {schema.__name__} accepts: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, field in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key, source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{key}'" + (f" in {source}" if source else ""))
    try:
        return schema(**kwargs)
    except (TypeError, ValueError) as err:  # a schema's own __post_init__ checks
        raise ConfigError(f"section '{prefix or schema.__name__}'" + (f" in {source}" if source else "")
                          + f": {err}") from err


def from_dict(schema: type[T], data: dict, source: str = "") -> T:
    """Build and validate a ``schema`` dataclass instance from a plain mapping."""
    return _build(schema, data, "", source)


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``path`` (with its ``_base_`` chain), apply ``overrides`` and validate against ``schema``."""
    tree = load_yaml_tree(path) if path is not None else {}
    return from_dict(schema, apply_overrides(tree, overrides), source=str(path) if path else "")


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (tuples become lists so YAML stays readable)."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ---------------------------------------------------------------------------------------------------- CLI
def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> argparse.ArgumentParser:
    """Add ``-cfg/--config PATH`` and repeatable ``--set key=value`` to ``parser``."""
    parser.add_argument("-cfg", "--config", required=required, help="YAML config file")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --set optim.lr=1e-4 train.epochs=2")
    return parser


def parse_config(schema: type[T], argv: Sequence[str] | None = None, description: str = "",
                 parser: argparse.ArgumentParser | None = None) -> tuple[T, argparse.Namespace]:
    """Parse ``-cfg``/``--set`` (plus any extra arguments of ``parser``) and return (config, namespace).

    A :class:`ConfigError` becomes a one-line ``parser.error`` so users see the key and file, not a traceback.
    """
    parser = add_config_args(parser or argparse.ArgumentParser(description=description))
    args = parser.parse_args(argv)
    try:
        return load_config(schema, args.config, args.overrides), args
    except ConfigError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits
