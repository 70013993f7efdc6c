"""YAML -> typed (dataclass) configuration.

One published setting = one short YAML file that inherits from a base with ``_base_`` and overrides a few keys;
``--set a.b=c`` overrides anything from the command line (``--set @overlay.yaml``: a whole file of them). A config
is validated against a dataclass schema:
an unknown key, a value of the wrong type, a missing required key, a missing file or a malformed ``_base_``/``--set``
is a :class:`ConfigError` that names the key and where it came from: the file that set it (a ``_base_`` file
included) or the ``--set`` item. A ``str`` field given a value YAML reads as a number or boolean (``001``, ``2024``,
``off``) gets the text as written.

    cfg = load_config(TrainConfig, "adnet/configs/nih_convnext.yaml", ["optim.lr=2e-4"])
"""
from __future__ import annotations

import argparse
import collections.abc
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


# Every key of a merged tree remembers where it came from (a file or a ``--set`` item), so an error names the place
# to fix, and scalars remember their text, so a str field given ``001``/``2024``/``off`` gets that text back.
Path_ = tuple  # a key path: mapping keys and list indexes, e.g. ("data", "sources", 0, "root")


class _Provenance:
    """Source (file or ``--set`` item) of each key path of a tree, and the raw text of its non-string scalars."""

    def __init__(self, default: str = ""):
        self.sources: dict[Path_, str] = {}
        self.raw: dict[Path_, str] = {}
        self.default = default

    def mark(self, node: Any, source: str, path: Path_ = ()) -> None:
        """Record ``source`` for ``path`` and everything below it in ``node``."""
        self.sources[path] = source
        if isinstance(node, dict):
            for key, value in node.items():
                self.mark(value, source, path + (key,))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                self.mark(value, source, path + (i,))

    def drop(self, path: Path_) -> None:
        n = len(path)
        for table in (self.sources, self.raw):
            for key in [k for k in table if k[:n] == path]:
                del table[key]

    def take(self, other: "_Provenance", path: Path_) -> None:
        n = len(path)
        for mine, theirs in ((self.sources, other.sources), (self.raw, other.raw)):
            mine.update({k: v for k, v in theirs.items() if k[:n] == path})

    def source_of(self, path: Path_) -> str:
        for n in range(len(path), -1, -1):
            if path[:n] in self.sources:
                return self.sources[path[:n]]
        return self.default

    def sources_under(self, path: Path_) -> list[str]:
        n = len(path)
        found = sorted({v for k, v in self.sources.items() if k[:n] == path and k != () and v})
        return found or ([self.source_of(path)] if self.source_of(path) else [])


def _scalar_texts(node: yaml.Node, data: Any, path: Path_, out: dict, stack: frozenset = frozenset()) -> None:
    """Collect the source text of every non-string scalar of ``data`` (composed from ``node``) by key path."""
    if id(node) in stack:  # a recursive alias
        return
    stack = stack | {id(node)}
    if isinstance(node, yaml.ScalarNode):
        if data is not None and not isinstance(data, str):
            out[path] = node.value
    elif isinstance(node, yaml.SequenceNode) and isinstance(data, list):
        for i, (child, value) in enumerate(zip(node.value, data)):
            _scalar_texts(child, value, path + (i,), out, stack)
    elif isinstance(node, yaml.MappingNode) and isinstance(data, dict):
        keys = {str(k): k for k in data}
        for key_node, child in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value in keys:
                key = keys[key_node.value]
                _scalar_texts(child, data[key], path + (key,), out, stack)


def _parse(text: str) -> tuple[Any, dict]:
    """YAML text -> (data, {key path: source text of each non-string scalar})."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    raw: dict = {}
    if node is not None:
        _scalar_texts(node, data, (), raw)
    return data, raw


def _read_yaml(path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data, raw = _parse(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data, raw


def deep_merge(base: dict, update: dict) -> dict:
    """Return ``base`` updated by ``update``; nested mappings merge, everything else is replaced."""
    return _merge(base, _Provenance(), update, _Provenance())


def _merge(base: dict, prov: _Provenance, update: dict, update_prov: _Provenance, prefix: Path_ = ()) -> dict:
    """:func:`deep_merge` that also moves ``update``'s provenance into ``prov`` for every key it replaces."""
    out = dict(base)
    for key, value in update.items():
        path = prefix + (key,)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], prov, value, update_prov, path)
        else:
            out[key] = value
            prov.drop(path)
            prov.take(update_prov, path)
    return out


def load_yaml_tree(path: str | Path) -> dict:
    """Read ``path`` and its ``_base_`` chain (a path or list of paths relative to the file), merged in order."""
    return _load_tree(Path(path))[0]


def _load_tree(path: Path, _seen: tuple[Path, ...] = ()) -> tuple[dict, _Provenance]:
    resolved = path.resolve()
    if resolved in _seen:
        raise ConfigError(f"{path}: circular _base_ chain: {' -> '.join(map(str, _seen + (resolved,)))}")
    data, raw = _read_yaml(path)
    has_bases = BASE_KEY in data
    bases = data.pop(BASE_KEY, None)
    if isinstance(bases, str):
        bases = [bases]
    if has_bases and (not isinstance(bases, list) or not bases
                      or not all(isinstance(b, str) and b.strip() for b in bases)):
        raise ConfigError(f"key '{BASE_KEY}' in {path}: expected a file name or a non-empty list of file names, "
                          f"got {bases!r}")
    merged: dict = {}
    prov = _Provenance()
    for base in bases or []:
        tree, base_prov = _load_tree(path.parent / base, _seen + (resolved,))
        merged = _merge(merged, prov, tree, base_prov)
    own = _Provenance()
    own.mark(data, str(path))
    own.raw = {k: v for k, v in raw.items() if k[:1] != (BASE_KEY,)}
    return _merge(merged, prov, data, own), prov


def apply_overrides(tree: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b=c`` strings; values are parsed as YAML (``1e-4`` -> float, ``[1,2]`` -> list, ``null``).

    ``@FILE.yaml`` merges a YAML file of overrides (nested keys; its own ``_base_`` allowed) at that place in the
    list, so later items win over it: how ``make ... SMOKE=1`` shrinks any published config (``<method>/smoke.yaml``).
    """
    return _apply_overrides(tree, _Provenance(), overrides)


def _apply_overrides(tree: dict, prov: _Provenance, overrides: Sequence[str]) -> dict:
    for item in overrides:
        if item.startswith("@"):   # an overlay file: merged like one more _base_, at this point of the list
            overlay, overlay_prov = _load_tree(Path(item[1:]))
            tree = _merge(tree, prov, overlay, overlay_prov)
            continue
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        source = f"--set {item}"
        try:
            value, raw = _parse(text) if text.strip() else ("", {})
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: invalid YAML value: {err}") from err
        parts = key.split(".")
        tree, path = _set_path(tree, parts, value, item, prov, ())
        prov.drop(path)
        prov.mark(value, source, path)
        for n in range(1, len(path)):  # mappings the override created on its way down are its own too
            prov.sources.setdefault(path[:n], source)
        prov.raw.update({path + k: v for k, v in raw.items()})
    return tree


def _set_path(node, parts: list[str], value: Any, item: str, prov: _Provenance, path: Path_):
    """Copy-on-write set of ``value`` at ``parts``; a digit part indexes a list (``data.sources.0.root=...``).

    Returns the new node and the key path that was set (list indexes as ints)."""
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if not head.isdigit() or int(head) >= len(node):
            raise ConfigError(f"override {item!r}: {head!r} is not an index of a list of {len(node)} items")
        node, key = list(node), int(head)
    else:
        node, key = dict(node or {}), head
    if not rest:
        node[key] = value
        return node, path + (key,)
    child = node.get(key) if isinstance(node, dict) else node[key]
    if child is not None and not isinstance(child, (dict, list)):
        dotted = ".".join(map(str, path + (key,)))
        origin = prov.source_of(path + (key,))
        raise ConfigError(f"override {item!r}: '{dotted}' is {child!r}" + (f" (from {origin})" if origin else "")
                          + f", not a mapping or list, so it has no key {rest[0]!r}")
    node[key], full = _set_path(child, rest, value, item, prov, path + (key,))
    return node, full


# ------------------------------------------------------------------------------------------- validation
def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is not None or not isinstance(tp, type):
        return str(tp).replace("typing.", "")
    return tp.__name__


def _key_name(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _coerce(value: Any, tp: Any, path: Path_, prov: _Provenance) -> Any:
    """Check ``value`` against annotation ``tp`` (recursively) and return it, converted where lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    source = prov.source_of(path)
    where = f"key '{_key_name(path)}'" + (f" in {source}" if source else "")
    raw = prov.raw.get(path)

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        options = [a for a in args if a is not type(None)]
        for arg in options:
            try:
                return _coerce(value, arg, path, prov)
            except ConfigError as err:
                text = str(err)
                errors.append(text[len(where) + 2:] if text.startswith(where + ": ") else text)
        if len(options) == 1:  # Optional[X]: X's own error says what is wrong
            raise ConfigError(f"{where}: {value!r} is neither null nor a valid {_type_name(options[0])}: {errors[0]}")
        raise ConfigError(f"{where}: {value!r} matches none of {_type_name(tp)}: " + "; ".join(
            f"as {_type_name(a)}: {e}" for a, e in zip(options, errors)))
    if origin is typing.Literal:
        if value not in args:
            if raw is not None and raw in args:
                return raw
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, path, prov)
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, path + (i,), prov) for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, path + (i,), prov) for i, v in enumerate(value)]
        return items if origin is list or tp is list else tuple(items)
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        val_tp = args[1] if args else Any
        return {k: _coerce(v, val_tp, path + (k,), prov) for k, v in value.items()}
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
            if raw is not None and not isinstance(value, (dict, list, tuple)):
                return raw  # YAML read `001`, `2024`, `off` or `2024-01-01` as a number/bool/date: keep the text
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _build(schema: type[T], data: dict, path: Path_, prov: _Provenance) -> T:
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    hints = typing.get_type_hints(schema)
    unknown = [k for k in data if k not in fields]
    if unknown:
        by_source: dict[str, list[str]] = {}
        for k in unknown:
            by_source.setdefault(prov.source_of(path + (k,)), []).append(f"'{_key_name(path + (k,))}'")
        names = ", ".join(", ".join(keys) + (f" in {src}" if src else "") for src, keys in by_source.items())
        raise ConfigError(f"unknown key {names}; {schema.__name__} accepts: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], path + (name,), prov)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            source = prov.source_of(path)
            raise ConfigError(f"missing required key '{_key_name(path + (name,))}'" + (f" in {source}" if source else ""))
    try:
        return schema(**kwargs)
    except (TypeError, ValueError) as err:  # a schema's own __post_init__ checks
        sources = prov.sources_under(path)
        raise ConfigError(f"section '{_key_name(path) or schema.__name__}'"
                          + (f" in {', '.join(sources)}" if sources else "") + f": {err}") from err


def from_dict(schema: type[T], data: dict, source: str = "") -> T:
    """Build and validate a ``schema`` dataclass instance from a plain mapping."""
    return _build(schema, data, (), _Provenance(default=source))


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``path`` (with its ``_base_`` chain), apply ``overrides`` and validate against ``schema``.

    Errors name the file (a ``_base_`` file included) or the ``--set`` item that gave the offending key."""
    if path is not None:
        tree, prov = _load_tree(Path(path))
        prov.default = str(path)
    else:
        tree, prov = {}, _Provenance()
    return _build(schema, _apply_overrides(tree, prov, overrides), (), prov)


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
def add_config_args(parser: argparse.ArgumentParser, required: bool = True,
                    example: str = "engine.device=cpu") -> argparse.ArgumentParser:
    """Add ``-cfg/--config PATH`` and repeatable ``--set key=value`` to ``parser``.

    ``example``: the ``--set`` items the help shows; each method passes keys its own schema has (AG-CNN's epochs,
    for one, are per stage: ``train.global_stage.epochs``).
    """
    parser.add_argument("-cfg", "--config", required=required, help="YAML config file")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help=f"override config keys, e.g. --set {example}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error instead of its one-line message")
    return parser


def parse_config(schema: type[T], argv: Sequence[str] | None = None, description: str = "",
                 parser: argparse.ArgumentParser | None = None,
                 example: str = "engine.device=cpu") -> tuple[T, argparse.Namespace]:
    """Parse ``-cfg``/``--set`` (plus any extra arguments of ``parser``) and return (config, namespace).

    A :class:`ConfigError` becomes a one-line ``parser.error`` so users see the key and file, not a traceback.
    ``example`` is the ``--set`` example of the help (see :func:`add_config_args`).
    """
    parser = add_config_args(parser or argparse.ArgumentParser(description=description), example=example)
    args = parser.parse_args(argv)
    try:
        return load_config(schema, args.config, args.overrides), args
    except ConfigError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits
