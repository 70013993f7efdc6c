"""Every weight file each ``make reproduce-*`` target needs, in one table, and the check that runs before it starts.

    make weights                                           the table: per target, what / where / source / sha256
    python -m shared.weights_manifest list [VAR=VALUE ...]         (the same; make passes its variables)
    python -m shared.weights_manifest check TARGET... [VAR=...]   exit 2 with ONE message naming every missing file

The Makefile variables that choose the files (ADNET_WEIGHTS, ADNET_BACKBONE, CHEXTRIEV_WEIGHTS, CXRCLIP_CONFIG,
the method's *_SET overrides, ...: :data:`VARIABLES`) come in as ``VAR=VALUE`` arguments, so the check sees the
paths the recipe will use. Hub weights (timm / torchvision ImageNet files that the HAM and AG-CNN configs download)
count as present when a local file is named (``model.pretrained_path`` in the method's *_SET) or they are in the hub
cache; otherwise they are missing when offline (``HF_HUB_OFFLINE=1`` or the host unreachable, one short probe) and
"downloaded on first use" when online. A sha256 is stated only where it is genuinely known (torchvision's files carry
its first 8 hex digits in their names); a present file whose hash is another known torchvision file (e.g. ResNet-50's
V1 where V2 is required) counts as wrong.
"""
from __future__ import annotations

import hashlib
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from shared.config import ConfigError, apply_overrides, load_yaml_tree
from shared.weights import HF_HOST, TORCH_HOST, hf_cached, hub_offline, offline, torch_hub_file

# the Makefile variables this module reads; `make weights` and the preflight pass them all (`*_SET`: the method's
# --set words, split as the shell splits them)
VARIABLES = ("ADNET_WEIGHTS", "ADNET_BACKBONE", "ADNET_IMAGENET", "ADNET_ALL_WEIGHTS", "ADNET_SET", "HAM_FOLD",
             "HAM_SET", "AGCNN_CONFIG", "AGCNN_SET", "CHEXTRIEV_WEIGHTS", "CHEXTRIEV_SET", "CXRCLIP_CONFIG",
             "CXRCLIP_PROMPTS")
CHEXTRIEV_VARIANTS = ("resnet50", "ath", "anaxnet", "v0_global", "v0_node", "v1", "v2", "v3", "v4", "v5", "v6",
                      "v6_learnable_edges")   # chextriev/reproduce.mk's CHEXTRIEV_VARIANTS (a test compares them)

TORCHVISION = "https://download.pytorch.org/models/"
# torchvision's ImageNet files: name -> what they are (the 8 hex digits in the name start the file's sha256)
TORCHVISION_FILES = {"resnet50-0676ba61.pth": "torchvision ResNet-50 IMAGENET1K_V1",
                     "resnet50-11ad3fa6.pth": "torchvision ResNet-50 IMAGENET1K_V2 (= DEFAULT)",
                     "densenet121-a639ec97.pth": "torchvision DenseNet-121 IMAGENET1K_V1 (= DEFAULT)"}
TORCHVISION_DEFAULT_FILES = {"resnet50": "resnet50-11ad3fa6.pth", "densenet121": "densenet121-a639ec97.pth"}
ADNET_RELEASE = "https://github.com/Lab-LVM/ADNet/releases/download/v0.0.1/"
REPO = Path(__file__).resolve().parents[1]   # the method configs are read from here; weight paths from the cwd


def sha256_prefix(torchvision_file: str) -> str:
    """The sha256 prefix torchvision puts in its file names: ``resnet50-0676ba61.pth`` -> ``0676ba61``."""
    return torchvision_file.rsplit("-", 1)[-1].split(".")[0]


@dataclass(frozen=True)
class Need:
    """One file (or folder) a target reads before training."""
    what: str
    path: str | None          # where it must be (None: hub weights with no local file named)
    set_by: str               # the make variable / config key that names it
    source: str               # where to download it
    sha256: str | None = None  # of the download, a prefix where only that is known
    folder: bool = False      # a Hugging Face folder (save_pretrained): present when it holds config.json
    hub: str | None = None    # "hf:<repo>" or "torch:<file>": a copy in that hub cache counts as present


@dataclass(frozen=True)
class Status:
    ok: bool
    text: str


def torchvision_need(what: str, path: str | None, set_by: str, filename: str, hub: bool = False) -> Need:
    return Need(what, path, set_by, TORCHVISION + filename, sha256_prefix(filename),
                hub=f"torch:{filename}" if hub else None)


# ------------------------------------------------------------------------------------------------ the variables
class Vars(dict):
    """Makefile variables; a missing one is an error naming it (make passes them all)."""

    def __missing__(self, name: str) -> str:
        raise SystemExit(f"shared.weights_manifest: variable {name} not given: run it through `make weights` or "
                         f"pass {name}=VALUE")

    def words(self, name: str) -> list[str]:
        """A *_SET variable as the recipe's shell splits it into --set words."""
        try:
            return shlex.split(self[name])
        except ValueError as err:   # the recipe's shell would fail on it too
            raise SystemExit(f"shared.weights_manifest: {name}={self[name]}: not valid shell words ({err}): quote "
                             "values with spaces or quotes") from None


def set_value(words: Sequence[str], key: str, default: str | None) -> str | None:
    """The value ``KEY=VALUE`` among --set words gives ``key`` (the last wins, as in shared.config); ``null``/empty
    -> None."""
    value = default
    for word in words:
        if word.startswith(key + "="):
            value = word.split("=", 1)[1]
    return None if value in (None, "", "null", "None", "~") else value


def config_tree(config: str, words: Sequence[str]) -> dict:
    """A method config (path relative to the repository) with the target's --set words applied."""
    return apply_overrides(load_yaml_tree(REPO / config), [w for w in words if "=" in w or w.startswith("@")])


def config_value(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


# ------------------------------------------------------------------------------------------------ per method
def adnet_needs(target: str, v: Vars) -> list[Need]:
    """The authors' whole-ADNet IN1K checkpoint (ADNET_IMAGENET: a timm backbone file instead); reproduce-adnet-all
    with ADNET_ALL_WEIGHTS starts its fine-tuning from that file and needs no IN1K one."""
    words = v.words("ADNET_SET")
    if target == "reproduce-adnet-all" and v["ADNET_ALL_WEIGHTS"]:
        path = set_value(words, "model.pretrained_path", v["ADNET_ALL_WEIGHTS"])
        return [Need("ADNet ALL weights to fine-tune from (ours or the released {backbone}_ADNet_ALL.pth.tar)", path,
                     "ADNET_ALL_WEIGHTS=FILE", ADNET_RELEASE + "{convnext_tiny|resnet50}_ADNet_ALL.pth.tar")] \
            if path else []
    backbone = "resnet50" if target == "reproduce-adnet-chexpert" or v["ADNET_BACKBONE"] == "resnet50" \
        else "convnext_tiny"
    if v["ADNET_IMAGENET"] or set_value(words, "model.backbone_weights", None):
        path = set_value(words, "model.backbone_weights", v["ADNET_IMAGENET"])
        return [Need(f"timm ImageNet state dict of the {backbone} backbone (deviation: decoder, HMT, head random)",
                     path, "ADNET_IMAGENET=FILE", f"torch.save(timm.create_model('{backbone}', pretrained=True)"
                     ".state_dict(), FILE) where there is network")]
    name = f"{backbone}_ADNet_IN1K.pth.tar"
    path = set_value(words, "model.pretrained_path", f"{v['ADNET_WEIGHTS']}/{name}")
    return [Need(f"the authors' whole-ADNet ImageNet checkpoint {name}", path,
                 "ADNET_WEIGHTS=DIR (or ADNET_IMAGENET=FILE, a deviation)", ADNET_RELEASE + name)] if path else []


def pretrained_needs(words: Sequence[str], tree: dict, what: str, set_var: str, hub: Need) -> list[Need]:
    """ImageNet weights a config downloads (``model.pretrained: true``) unless ``model.pretrained_path`` names a
    file; ``model.pretrained=false`` in the *_SET words needs none (random init)."""
    local = set_value(words, "model.pretrained_path", config_value(tree, "model.pretrained_path"))
    if local:
        return [Need(what, local, f'{set_var}="model.pretrained_path=FILE"', hub.source, None)]
    if str(set_value(words, "model.pretrained", str(config_value(tree, "model.pretrained")))).lower() != "true":
        return []
    return [hub]


def ham_config(target: str, v: Vars) -> str:
    """The config ham/reproduce.mk trains for ``target``."""
    fold = v["HAM_FOLD"]
    return {"reproduce-ham-nih": f"nih_cls_fold{fold}", "reproduce-ham-nih-loc": f"nih_loc_fold{fold}",
            "reproduce-ham-nih-official": "nih_official_split", "reproduce-ham-chexpert": "chexpert"}[target]


def ham_needs(target: str, v: Vars) -> list[Need]:
    words = v.words("HAM_SET")
    tree = config_tree(f"ham/configs/{ham_config(target, v)}.yaml", words)
    what = "ImageNet weights of HAM's ResNet-50 (torchvision IMAGENET1K_V1, what the original used)"
    hub = torchvision_need(what, None, 'HAM_SET="model.pretrained_path=FILE" (config model.pretrained_path)',
                           "resnet50-0676ba61.pth", hub=True)
    return pretrained_needs(words, tree, what, "HAM_SET", hub)


def agcnn_needs(target: str, v: Vars) -> list[Need]:
    words = v.words("AGCNN_SET")
    tree = config_tree(f"agcnn/configs/{v['AGCNN_CONFIG']}.yaml", words)
    backbone = config_value(tree, "model.backbone")
    tag = config_value(tree, "model.pretrained_tag")
    tag = next((w.split("=", 1)[1] for w in reversed(words) if w.startswith("model.pretrained_tag=")),
               "tv_in1k" if tag is None else tag)   # agcnn.config's default; empty: timm's default tag
    timm_name = f"{backbone}.{tag}" if tag and "." not in backbone else timm_default_tag(backbone)
    what = f"ImageNet weights of AG-CNN's {backbone} branches (timm {timm_name})"
    same_file = {"resnet50.tv_in1k": "resnet50-0676ba61.pth", "densenet121.tv_in1k": "densenet121-a639ec97.pth"}
    local = f" (timm's hub), or torchvision's file {TORCHVISION}{same_file[timm_name]}" \
        if timm_name in same_file else ""
    hub = Need(what, None, 'AGCNN_SET="model.pretrained_path=FILE" (a timm/torchvision state dict)',
               f"https://huggingface.co/timm/{timm_name}{local}", hub=f"hf:timm/{timm_name}")
    return pretrained_needs(words, tree, what, "AGCNN_SET", hub)


def timm_default_tag(name: str) -> str:
    """``resnet50`` -> the tagged name timm picks by default (``resnet50.a1_in1k``)."""
    if "." in name:
        return name
    from timm.models import get_pretrained_cfg

    return f"{name}.{get_pretrained_cfg(name).tag}"


def chextriev_needs(target: str, v: Vars) -> list[Need]:
    config = target.removeprefix("reproduce-chextriev-mimic-").removesuffix("-fixed")
    if config == "ath":
        return []   # trained from scratch
    arch = "densenet121" if config == "anaxnet" else "resnet50"
    filename = TORCHVISION_DEFAULT_FILES[arch]
    path = set_value(v.words("CHEXTRIEV_SET"), "model.pretrained_path",
                     f"{v['CHEXTRIEV_WEIGHTS']}/{arch}_imagenet.pth")
    what = f"ImageNet weights of the frozen {arch}: {TORCHVISION_FILES[filename]}, what the original loaded"
    return [torchvision_need(what, path, "CHEXTRIEV_WEIGHTS=DIR", filename)] if path else []


def cxrclip_needs(target: str, v: Vars) -> list[Need]:
    tree = config_tree(f"cxrclip/configs/{v['CXRCLIP_CONFIG']}.yaml", [])
    bert = config_value(tree, "model.text.pretrained")
    needs = [Need("Bio_ClinicalBERT (text encoder + tokenizer), saved with save_pretrained", bert,
                  "config model.text.pretrained / data.tokenizer",
                  "https://huggingface.co/emilyalsentzer/Bio_ClinicalBERT (AutoModel and AutoTokenizer "
                  ".from_pretrained(...).save_pretrained(FOLDER) where there is network)", folder=True)]
    image = config_value(tree, "model.image.pretrained")
    if config_value(tree, "model.image.name") == "swin":
        needs.append(Need("Swin-T ImageNet model, saved with save_pretrained", image, "config model.image.pretrained",
                          "https://huggingface.co/microsoft/swin-tiny-patch4-window7-224 (.save_pretrained(FOLDER))",
                          folder=True))
    elif image:
        needs.append(torchvision_need("ImageNet weights of the ResNet-50 image encoder (torchvision IMAGENET1K_V1)",
                                      image, "config model.image.pretrained", "resnet50-0676ba61.pth"))
    if any(s.get("prompt_file") not in (None, "templates") for s in config_value(tree, "data.sources") or []):
        needs.append(Need("the original's training prompt file train_prompts_all.json (CheXpert / ChestX-ray14 "
                          "texts)", v["CXRCLIP_PROMPTS"], "CXRCLIP_PROMPTS=FILE (data.sources.N.prompt_file)",
                          "https://github.com/kakaobrain/cxr-clip/blob/main/datasets/train_prompts_all.json"))
    return needs


# target -> what it needs: THE table (`make print-smoke-targets` lists the same targets; a test compares them)
MANIFEST: dict[str, Callable[[str, Vars], list[Need]]] = {
    **{f"reproduce-adnet-{d}": adnet_needs for d in ("nih", "mimic", "chexpert", "all")},
    **{f"reproduce-ham-{d}": ham_needs for d in ("nih", "nih-loc", "nih-official", "chexpert")},
    "reproduce-agcnn-nih": agcnn_needs,
    **{f"reproduce-chextriev-mimic-{c}{fixed}": chextriev_needs
       for c in CHEXTRIEV_VARIANTS for fixed in ("", "-fixed")},
    "reproduce-cxrclip-mimic": cxrclip_needs,
}


# ------------------------------------------------------------------------------------------------ checking
def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_status(need: Need, path: Path) -> Status:
    if need.folder:
        if (path / "config.json").is_file():
            return Status(True, f"present: {path}")
        return Status(False, f"{'has no config.json' if path.is_dir() else 'not found'}: {path}")
    if not path.is_file():
        return Status(False, f"not found: {path}")
    if not need.sha256:
        return Status(True, f"present: {path}")
    digest = sha256_of(path)
    if digest.startswith(need.sha256):
        return Status(True, f"present, sha256 {need.sha256}... verified: {path}")
    other = next((what for name, what in TORCHVISION_FILES.items() if digest.startswith(sha256_prefix(name))), None)
    if other:
        return Status(False, f"wrong file: {path} is {other} (sha256 {digest[:8]}...), expected sha256 "
                             f"{need.sha256}...")
    return Status(True, f"present (sha256 {digest[:8]}..., not the download's {need.sha256}...: fine for a re-saved "
                        f"state dict of the same weights): {path}")


def hub_status(need: Need) -> Status:
    kind, name = need.hub.split(":", 1)
    cached = hf_cached(name) if kind == "hf" else torch_hub_file(name).is_file()
    if cached:
        return Status(True, f"in the {'Hugging Face' if kind == 'hf' else 'torch'} hub cache ({name})")
    if offline(HF_HOST if kind == "hf" else TORCH_HOST):
        why = "HF_HUB_OFFLINE=1" if hub_offline() else "no network"
        return Status(False, f"not in the hub cache ({name}) and {why}: download it where there is network, then "
                             f"name the file with {need.set_by}")
    return Status(True, f"not cached; downloaded on first use ({name})")


def status(need: Need) -> Status:
    return hub_status(need) if need.path is None else file_status(need, Path(need.path).expanduser())


def needs_of(target: str, v: Vars) -> list[Need]:
    if target not in MANIFEST:
        raise SystemExit(f"shared.weights_manifest: unknown target {target}; known: {' '.join(MANIFEST)}")
    return MANIFEST[target](target, v)


def check(targets: Sequence[str], v: Vars) -> int:
    """0 when every file of ``targets`` is there; else ONE message on stderr naming every missing one, and 2."""
    needs = list({label(need): need for target in targets for need in needs_of(target, v)}.values())
    bad = [(need, st) for need in needs for st in [status(need)] if not st.ok]
    if not bad:
        return 0
    name = targets[0] if len(targets) == 1 else f"{targets[0]} and {len(targets) - 1} more targets"
    lines = [f"{name}: {len(bad)} of {len(needs)} weight files missing or wrong (`make weights` lists all):"]
    lines += [f"  - {need.what}: {st.text}\n    set by {need.set_by}; download: {need.source}" for need, st in bad]
    print("\n".join(lines), file=sys.stderr)
    return 2


def label(need: Need) -> str:
    return need.path or f"hub {need.hub.split(':', 1)[1]}"


def table(v: Vars) -> str:
    """Per target one line per file (present or not), then per distinct file what it is and where it comes from."""
    rows, files = [], {}
    for target in MANIFEST:
        needs = needs_of(target, v)
        if not needs:
            rows.append((target, "-", "no weight files (starts from random weights)"))
        for need in needs:
            st = files.setdefault(label(need), (need, status(need)))[1]
            rows.append((target, "ok" if st.ok else "MISSING", label(need)))
    width = max(len(r[0]) for r in rows)
    chosen = " ".join(f"{name}={v[name]}" for name in ("ADNET_WEIGHTS", "ADNET_BACKBONE", "AGCNN_CONFIG",
                                                          "CHEXTRIEV_WEIGHTS", "CXRCLIP_CONFIG"))
    out = [f"Weight files of every reproduce target, for {chosen} (set these and the others of "
           "shared/weights_manifest.py VARIABLES on the make command line as for the target)", "",
           f"{'target':<{width}}  {'status':<7}  file", *(f"{t:<{width}}  {s:<7}  {f}" for t, s, f in rows), "",
           "The files (sha256: of the download, where known):"]
    for name, (need, st) in files.items():
        out += [f"{name}", f"    {need.what}", f"    {'ok' if st.ok else 'MISSING'}: {st.text}",
                f"    set by: {need.set_by}", f"    download: {need.source}",
                f"    sha256: {need.sha256 + '... (in torchvision file name)' if need.sha256 else 'unknown'}"]
    missing = sum(r[1] == "MISSING" for r in rows)
    out.append(f"\n{missing} of {len(rows)} target files missing; each reproduce target checks its own before it "
               "starts." if missing else f"\nevery weight file of every reproduce target is there.")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command, targets = (args[0] if args else None), [a for a in args[1:] if "=" not in a]
    if command not in ("list", "check") or (command == "check") != bool(targets):
        print("usage: python -m shared.weights_manifest {list | check TARGET...} [VAR=VALUE ...]", file=sys.stderr)
        return 2
    v = Vars(a.split("=", 1) for a in args[1:] if "=" in a)
    try:
        if command == "check":
            return check(targets, v)
        print(table(v))
    except (ConfigError, OSError) as err:   # e.g. AGCNN_CONFIG naming no config file
        print(f"shared.weights_manifest: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
