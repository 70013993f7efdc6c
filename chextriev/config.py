"""The CheXtriev config schema (one YAML per published setting, ``_base_`` inheritance, ``--set`` overrides)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional

from shared.engine import EngineConfig

from chextriev.models import ModelConfig


@dataclass
class DataConfig:
    prepared: str = "data/chextriev"       # output directory of `python -m chextriev.prepare`
    crop_size: int = 224                   # anatomy crops (V0-V6, AnaXNet)
    image_size: int = 224                  # whole image (ResNet50 baseline; ATH uses model.ath_input_size)
    feature_cache: bool = True             # cache the frozen CNN's outputs once per image (not for ATH)
    cache_dir: str = ""                    # default: <prepared>/feature_cache
    cache_dtype: Literal["float16", "float32"] = "float16"   # float32 where the cached feature is the retrieval
    #                                        embedding (resnet50.yaml): float16 reorders near-ties; 2x the disk
    cache_batch_size: int = 32
    batch_size: int = 16                   # per optimizer micro-batch; engine.grad_accum gives the effective batch
    eval_batch_size: int = 64
    limit_train: int = 0                   # >0: use only the first N training images (smoke tests)
    label_policy: Literal["yes_wins", "last_wins"] = "yes_wins"   # the prepared data must have been made with it
    #                                        (its meta.json); last_wins = the original's parsing (faithful protocol)
    verify_images: bool = False            # decode every prepared image once before training (parallel, progress bar)
    on_bad_image: Literal["error", "warn"] = "error"   # an undecodable image: stop naming it, or warn + leave it out


@dataclass
class OptimConfig:
    lr: float = 1.0e-4
    weight_decay: float = 0.0
    scheduler: Literal["plateau", "step", "none"] = "plateau"   # plateau: ReduceLROnPlateau on val loss
    plateau_factor: float = 0.1
    plateau_patience: int = 4
    step_size: int = 30                    # StepLR (epochs), AnaXNet
    step_gamma: float = 0.1


@dataclass
class LossConfig:
    graph_importance: float = 1.0          # gi: gi * BCE(graph) + (1 - gi) * BCE(nodes)
    triplet_weight: float = 1.0            # ATH: BCE(type) + w * triplet(hash)


@dataclass
class EvalConfig:
    ks: List[int] = field(default_factory=lambda: [3, 5, 10])
    drop_self: Literal["first", "id"] = "first"   # first: the original (drop the first result); id: the fix
    side_aware: bool = True                # also the 17-class (right/left) tables
    skip_modes: List[bool] = field(default_factory=lambda: [False, True])
    empty_class: Literal["zero", "exclude"] = "zero"   # a class without query rows (subgroups, skip mode):
    #                                      zero = 0.0 and still averaged (the original; comparable with published)
    #                                      exclude = NaN, left out of Class Average / Weighted Average
    subgroups: bool = True                 # view AP/PA, sex, age bins (9 classes, skip=False)
    strips: int = 4                        # PNG strips: a query and its top-5, for this many queries
    split: str = "test"


@dataclass
class ChextrievConfig:
    name: str = "chextriev"                # run / config name
    published_key: Optional[str] = None    # row of published.yaml to compare with
    runs_root: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    val_per_epoch: int = 2                 # validations per epoch (the original's val_check_interval=0.5); 0 = use
    #                                        engine.val_every_iters as given


# The two ways each published row is run (chextriev/reproduce.mk): they differ in exactly these two settings.
PROTOCOLS = {
    "faithful": ({"model.bn_drift": True, "data.label_policy": "last_wins"},
                 "the published protocol: the frozen CNN's BatchNorm in train mode (running statistics drift), "
                 "last-wins label parsing"),
    "fixed": ({"model.bn_drift": False, "data.label_policy": "yes_wins"},
              "ours: the frozen CNN's BatchNorm in eval mode, yes-wins label parsing"),
}


def protocol_of(cfg: ChextrievConfig) -> str:
    """"faithful", "fixed" or "custom" (any other mix of the two settings)."""
    values = {"model.bn_drift": cfg.model.bn_drift, "data.label_policy": cfg.data.label_policy}
    return next((name for name, (settings, _) in PROTOCOLS.items() if settings == values), "custom")


def protocol_note(cfg: ChextrievConfig) -> str:
    """One line for results.json / report.md naming the protocol a run used."""
    name = protocol_of(cfg)
    what = PROTOCOLS[name][1] if name in PROTOCOLS else "neither published nor ours"
    return (f"protocol: {name} ({what}; model.bn_drift={str(cfg.model.bn_drift).lower()}, "
            f"data.label_policy={cfg.data.label_policy})")
