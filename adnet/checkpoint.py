"""Checkpoints: the authors' released ``{name}.pth.tar`` files <-> our ADNet, through an explicit key map.

Original layout (what :func:`original_to_ours` expects; the inverse is :func:`ours_to_original`):

* ConvNeXt backbone, Facebook-style names (top level, no prefix)::

      downsample_layers.0.0.*            -> backbone.stem.0.*                 (4x4 stem conv)
      downsample_layers.0.1.*            -> backbone.stem.1.*                 (stem LayerNorm)
      downsample_layers.{i}.{j}.*  i>=1  -> backbone.stages.{i}.downsample.{j}.*
      stages.{i}.{j}.dwconv.*            -> backbone.stages.{i}.blocks.{j}.conv_dw.*
      stages.{i}.{j}.norm.*              -> backbone.stages.{i}.blocks.{j}.norm.*
      stages.{i}.{j}.pwconv1.* / pwconv2 -> backbone.stages.{i}.blocks.{j}.mlp.fc1.* / mlp.fc2.*
      stages.{i}.{j}.gamma               -> backbone.stages.{i}.blocks.{j}.gamma
      norm.*                             -> norm.*        (the head's LayerNorm)
      head.*                             -> head.*        (the classifier)

* ResNet backbone, timm names (top level): ``conv1.*, bn1.*, layer{1-4}.*`` -> ``backbone.<same>``;
  the classifier ``fc.*`` -> ``head.*``.

* ADNet's own parts (both backbones), the names of the released files (layouts: ``adnet/tests/layouts``)::

      attn_decoder.{i}.norm1_q / norm1_kv / norm2 -> decoder.{i}.norm_q / norm_kv / norm_mlp   (i: 0 = AD1, 1 = AD2)
      attn_decoder.{i}.attn.*                     -> decoder.{i}.attn.*        (q, kv, proj)
      attn_decoder.{i}.mlp.fc1.{j} / dw_conv.0 / fc2.{j}
                                                  -> decoder.{i}.mlp.{j} / mlp.3 (ResNet: mlp.3.conv) / mlp.{4+j}
      fc_layer.*                                  -> fc_layer.*                (1x1 conv; + BN for ResNet)
      global_pool.spatial_encode.0 / .1           -> hmt.filter / hmt.bn1      (15x15 depthwise E, BN1)
      global_pool.channel_encode.0 / .1           -> hmt.proj / hmt.bn2        (CxC 1x1 W, BN2)

  A checkpoint whose names differ fails with one error listing every unmatched key on both sides (checkpoint keys
  nobody claims, model keys nobody fills, shape mismatches); ``extra_rules`` (regex, replacement) pairs rewrite
  other names to the authors' ones first (files of other ADNet variants, without code changes).

A file is either a raw state dict or a dict with the state dict under ``"model"``, ``"state_dict"`` (or
``"model_ema"`` / ``"state_dict_ema"`` when ``ema=True``); a ``module.`` prefix (DDP) is stripped.
Our own checkpoints (shared.engine: keys ``backbone.*``) are recognised and loaded without mapping.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

import torch

from shared.engine.checkpoint import load_failure

from .model import ADNet, build_model

__all__ = ["CheckpointKeyError", "extract_state_dict", "original_to_ours", "ours_to_original", "is_ours",
           "load_state_dict_file", "load_weights", "load_backbone_weights", "parse_rename_rules", "create_model",
           "choose_ema", "load_start_weights", "adnet_part_prefixes"]

Rules = Iterable[tuple[str, str]]


class CheckpointKeyError(KeyError):
    """The checkpoint's names or shapes do not match the model; the message lists every unmatched key."""

    def __str__(self) -> str:  # KeyError repr-quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------------- containers
def extract_state_dict(obj, ema: bool = False) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint object (raw, or under model/state_dict[_ema]); strips module."""
    if not isinstance(obj, Mapping):
        raise CheckpointKeyError(f"checkpoint is a {type(obj).__name__}, not a state dict or a dict holding one")
    keys = ("model_ema", "state_dict_ema", "ema") if ema else ("model", "state_dict")
    for key in keys:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    else:
        if ema:
            raise CheckpointKeyError(f"checkpoint has no EMA weights (looked for {list(keys)}; "
                                     f"top-level keys: {sorted(obj)[:10]})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointKeyError(f"no tensors found in the checkpoint (top-level keys: {sorted(obj)[:10]})")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in tensors.items()}


def is_ours(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("backbone.") for k in state)


# ------------------------------------------------------------------------------------------------- maps
_CONVNEXT_TO_OURS = [
    (r"^downsample_layers\.0\.(\d+)\.", r"backbone.stem.\1."),
    (r"^downsample_layers\.(\d+)\.(\d+)\.", r"backbone.stages.\1.downsample.\2."),
    (r"^stages\.(\d+)\.(\d+)\.dwconv\.", r"backbone.stages.\1.blocks.\2.conv_dw."),
    (r"^stages\.(\d+)\.(\d+)\.pwconv(\d)\.", r"backbone.stages.\1.blocks.\2.mlp.fc\3."),
    (r"^stages\.(\d+)\.(\d+)\.(norm\.|gamma$)", r"backbone.stages.\1.blocks.\2.\3"),
]
_CONVNEXT_TO_ORIG = [
    (r"^backbone\.stem\.(\d+)\.", r"downsample_layers.0.\1."),
    (r"^backbone\.stages\.(\d+)\.downsample\.(\d+)\.", r"downsample_layers.\1.\2."),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.", r"stages.\1.\2.dwconv."),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc(\d)\.", r"stages.\1.\2.pwconv\3."),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.(norm\.|gamma$)", r"stages.\1.\2.\3"),
]
_RESNET_TO_OURS = [(r"^(conv1|bn1|layer[1-4])\.", r"backbone.\1.")]
_RESNET_TO_ORIG = [(r"^backbone\.", "")]
# The decoder MLP: the original's three Sequentials (fc1, dw_conv, fc2) hold the layers of our one ConvMlp;
# (original index, our index) of the layers with weights, in the spec's order of operations per style.
_MLP_LAYERS = {
    "convnext": [("fc1.0", "0"), ("fc1.1", "1"), ("dw_conv.0", "3"), ("fc2.0", "4"), ("fc2.2", "6"), ("fc2.3", "7")],
    "resnet": [("fc1.0", "0"), ("fc1.2", "2"), ("dw_conv.0", "3.conv"), ("fc2.1", "5"), ("fc2.2", "6"),
               ("fc2.3", "7")],
}


def adnet_part_prefixes(style: str) -> list[tuple[str, str]]:
    """(original prefix, our prefix) of every part ADNet adds to the backbone, classifier included."""
    pairs = []
    for i in (0, 1):
        orig, ours = f"attn_decoder.{i}.", f"decoder.{i}."
        pairs += [(orig + "norm1_q.", ours + "norm_q."), (orig + "norm1_kv.", ours + "norm_kv."),
                  (orig + "norm2.", ours + "norm_mlp."), (orig + "attn.", ours + "attn.")]
        pairs += [(f"{orig}mlp.{a}.", f"{ours}mlp.{b}.") for a, b in _MLP_LAYERS[style]]
    pairs += [("fc_layer.", "fc_layer."),
              ("global_pool.spatial_encode.0.", "hmt.filter."), ("global_pool.spatial_encode.1.", "hmt.bn1."),
              ("global_pool.channel_encode.0.", "hmt.proj."), ("global_pool.channel_encode.1.", "hmt.bn2.")]
    pairs += [("norm.", "norm."), ("head.", "head.")] if style == "convnext" else [("fc.", "head.")]
    return pairs


def _key_rules(style: str, to_ours: bool) -> list[tuple[str, str]]:
    if style == "convnext":
        backbone = _CONVNEXT_TO_OURS if to_ours else _CONVNEXT_TO_ORIG
    else:
        backbone = _RESNET_TO_OURS if to_ours else _RESNET_TO_ORIG
    parts = [(re.escape(a if to_ours else b), b if to_ours else a) for a, b in adnet_part_prefixes(style)]
    return backbone + [(f"^{pattern}", repl) for pattern, repl in parts]


def parse_rename_rules(items: Iterable[str]) -> list[tuple[str, str]]:
    """``["REGEX=REPLACEMENT", ...]`` (config ``model.pretrained_rename``, ``adnet.test --rename``) -> rule pairs."""
    rules = []
    for item in items:
        pattern, sep, repl = item.partition("=")
        if not sep or not pattern:
            raise ValueError(f"rename rule {item!r} must look like REGEX=REPLACEMENT")
        rules.append((pattern, repl))
    return rules


def _rename(key: str, rules: Rules) -> str | None:
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return None


def original_to_ours(state: Mapping[str, torch.Tensor], style: str,
                     extra_rules: Rules = ()) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an original-layout state dict to ours. Returns (renamed, keys no rule claimed).

    ``extra_rules`` first rewrite a key to the authors' name (the first matching rule wins); the built-in map
    then takes it to ours."""
    extra_rules, rules = list(extra_rules), _key_rules(style, to_ours=True)
    out: dict[str, torch.Tensor] = {}
    unclaimed: list[str] = []
    for key, value in state.items():
        new = _rename(_rename(key, extra_rules) or key, rules)
        if new is None:
            unclaimed.append(key)
        elif new in out:
            raise CheckpointKeyError(f"two checkpoint keys map to {new!r} (second: {key!r})")
        else:
            out[new] = value
    return out, unclaimed


def ours_to_original(state: Mapping[str, torch.Tensor], style: str) -> dict[str, torch.Tensor]:
    """Inverse map: our state dict -> the original layout (used by the round-trip test and for exporting)."""
    rules = _key_rules(style, to_ours=False)
    out = {}
    for key, value in state.items():
        new = _rename(key, rules)
        out[key if new is None else new] = value
    return out


# ------------------------------------------------------------------------------------------------ loading
def read_checkpoint(path: str | Path):
    """``torch.load(weights_only=True)`` of a local file; a missing, truncated or non-checkpoint file (pickled
    objects, which ``weights_only`` refuses) is one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors are many types; name the file
        raise CheckpointKeyError(load_failure(path, err)) from err


def load_state_dict_file(path: str | Path, ema: bool = False) -> dict[str, torch.Tensor]:
    path = Path(path)
    obj = read_checkpoint(path)
    try:
        return extract_state_dict(obj, ema=ema)
    except CheckpointKeyError as err:
        raise CheckpointKeyError(f"{path}: {err}") from None


def _fmt(keys: list[str], limit: int = 40) -> str:
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_weights(model: ADNet, source: str | Path | Mapping[str, torch.Tensor], *, ema: bool = False,
                 extra_rules: Rules = (), drop_head_if_mismatch: bool = False, ignore_head: bool = False,
                 source_name: str = "") -> list[str]:
    """Load ours or the original layout into ``model``; strict about every key and shape.

    ``drop_head_if_mismatch``: a classifier of another size (fine-tuning the 1000-class IN1K or 21-class ALL
    weights) is skipped and left freshly initialised. ``ignore_head``: the checkpoint's classifier (``head.*``,
    any class count or none) is not loaded at all and the model's is not required (k-NN, which uses only the
    embedding; the head's LayerNorm ``norm.*`` is part of the embedding and still loaded strictly).
    Returns notes (what was skipped), raises :class:`CheckpointKeyError` listing every unmatched key otherwise.
    """
    name = source_name or (str(source) if isinstance(source, (str, Path)) else "state dict")
    state = load_state_dict_file(source, ema=ema) if isinstance(source, (str, Path)) else extract_state_dict(source)
    if is_ours(state):
        mapped, unclaimed = dict(state), []
    else:
        mapped, unclaimed = original_to_ours(state, model.style, extra_rules)
    target = model.state_dict()
    notes = []
    head_keys = [k for k in target if k.startswith("head.")]
    if ignore_head:
        dropped = [k for k in mapped if k.startswith("head.")]
        for k in dropped:
            mapped.pop(k)
        target = {k: v for k, v in target.items() if not k.startswith("head.")}
        notes.append(f"classifier of {name} not loaded ({len(dropped)} head tensors ignored: only the embedding "
                     f"is used)")
    elif drop_head_if_mismatch and any(k in mapped and mapped[k].shape != target[k].shape for k in head_keys):
        for k in head_keys:
            mapped.pop(k, None)
        notes.append(f"classifier of {name} has another size; head left freshly initialised "
                     f"({model.num_classes} classes)")
    missing = [k for k in target if k not in mapped and not (notes and k.startswith("head."))]
    unexpected = [k for k in mapped if k not in target]
    shapes = [f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(target[k].shape)}"
              for k in mapped if k in target and mapped[k].shape != target[k].shape]
    if unclaimed or missing or unexpected or shapes:
        lines = [f"{name} does not match {model.backbone_name} ADNet ({model.style} layout, {model.num_classes} "
                 f"classes); see adnet/README.md 'Loading the released checkpoints' for the expected names."]
        if unclaimed:
            lines.append(f"checkpoint keys no rule maps ({len(unclaimed)}): {_fmt(unclaimed)}")
        if unexpected:
            lines.append(f"checkpoint keys (after mapping) the model lacks ({len(unexpected)}): {_fmt(unexpected)}")
        if missing:
            lines.append(f"model keys the checkpoint does not fill ({len(missing)}): {_fmt(missing)}")
        if shapes:
            lines.append(f"shape mismatches ({len(shapes)}): {_fmt(shapes)}")
        raise CheckpointKeyError("\n  ".join(lines))
    model.load_state_dict(mapped, strict=not notes)
    return notes


def choose_ema(checkpoint: Mapping, ema: bool | None = None) -> tuple[bool, str]:
    """Which weights of a loaded checkpoint file to start from -> (use the EMA weights?, why).

    ``ema`` True / False is an explicit choice. ``None`` (auto): the weights our best.pt was selected on
    (``best_source`` "ema" / "raw", written by shared.engine, e.g. with ``engine.ema_select: best``); an own
    checkpoint without ``best_source`` (last.pt) -> its EMA weights when it has them (as
    ``shared.engine.weights_from_checkpoint`` does); any other file (the released ``.pth.tar``) -> its main weights.
    """
    if ema is not None:
        return bool(ema), f"{'EMA' if ema else 'raw'} weights (explicit choice)"
    source = checkpoint.get("best_source") if isinstance(checkpoint, Mapping) else None
    if source in ("ema", "raw"):
        return source == "ema", f"{source} weights: the ones best.pt was selected on (best_source={source!r})"
    if isinstance(checkpoint, Mapping) and checkpoint.get("format") == 1 and isinstance(checkpoint.get("ema"), Mapping):
        return True, "EMA weights (our checkpoint records no best_source; EMA preferred when present)"
    return False, "main (raw) weights"


def load_start_weights(path: str | Path, ema: bool | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict to start (fine-tune) from, chosen by :func:`choose_ema`, and a note saying which and why."""
    path = Path(path)
    obj = read_checkpoint(path)
    use_ema, why = choose_ema(obj, ema)
    try:
        state = extract_state_dict(obj, ema=use_ema)
    except CheckpointKeyError as err:
        raise CheckpointKeyError(f"{path}: {err}") from None
    return state, f"initialised from {path}: {why}"


def load_backbone_weights(model: ADNet, path: str | Path) -> list[str]:
    """ImageNet weights of the backbone alone (a local timm state dict, e.g. ``convnext_tiny.fb_in1k`` or
    ``resnet50.a1_in1k`` saved with ``torch.save(m.state_dict())``; Facebook ConvNeXt names also work) into
    ``model.backbone``; the classifier and pruned final norm of the file are ignored, the decoder / HMT / head
    keep their fresh init. Strict about every backbone key and shape."""
    state = load_state_dict_file(path)
    target = model.backbone.state_dict()
    renamed, _ = original_to_ours(state, model.style)     # Facebook ConvNeXt / timm ResNet -> backbone.*
    picked = {k: v for k, v in state.items() if k in target}
    for key, value in renamed.items():
        if key.startswith("backbone.") and key[len("backbone."):] in target:
            picked.setdefault(key[len("backbone."):], value)
    missing = [k for k in target if k not in picked and not k.endswith("num_batches_tracked")]
    shapes = [f"{k}: file {tuple(v.shape)} vs backbone {tuple(target[k].shape)}"
              for k, v in picked.items() if v.shape != target[k].shape]
    if missing or shapes:
        raise CheckpointKeyError(
            f"{path} does not hold {model.backbone_name} backbone weights: "
            + (f"backbone keys it does not fill ({len(missing)}): {_fmt(missing)}" if missing else "")
            + (f"; shape mismatches ({len(shapes)}): {_fmt(shapes)}" if shapes else ""))
    model.backbone.load_state_dict({**target, **picked})
    return [f"backbone initialised from {path} (ImageNet weights of {model.backbone_name} only; decoder, HMT and "
            f"head random — a deviation: the published rows started from the authors' whole-ADNet IN1K weights)"]


def create_model(name: str, num_classes: int | None = None, pretrained_path: str | Path | None = None,
                 ema: bool = False, extra_rules: Rules = (), **kwargs) -> ADNet:
    """``adnet.create_model("convnext_tiny_ADNet_IN1K_NIH")``: build a registered ADNet; with ``pretrained_path``
    (a local file only; nothing is downloaded) load its weights, original layout or ours. With a ``num_classes``
    other than the checkpoint's, the classifier is re-initialised (fine-tuning)."""
    if pretrained_path is not None and not Path(pretrained_path).is_file():
        raise FileNotFoundError(f"checkpoint file not found: {pretrained_path}")
    model = build_model(name, num_classes, **kwargs)
    if pretrained_path is not None:
        load_weights(model, pretrained_path, ema=ema, extra_rules=extra_rules,
                     drop_head_if_mismatch=num_classes is not None)
    return model
