"""ADNet config schema: one YAML per published setting (``_base_`` inheritance, ``--set key=value`` overrides).

Sections: ``model`` (which ADNet, which weights to start from), ``data`` (dataset, roots, splits, sizes,
augmentation), ``optim`` (AdamW + per-iteration cosine), ``eval`` (raw/EMA choice, k-NN grid), ``engine``
(shared.engine.EngineConfig: epochs, AMP, EMA, seed, validation cadence). See configs/base.yaml for the values
common to every setting and adnet/README.md for what each published row used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional

from shared.engine import EngineConfig

DATASETS = ("nih", "mimic", "chexpert", "all")


@dataclass
class ModelConfig:
    name: str = "convnext_tiny_ADNet_IN1K_NIH"   # a registered name (16 originals) or "<timm backbone>_ADNet"
    num_classes: Optional[int] = None            # None: the dataset's number of classes
    pretrained_path: Optional[str] = None        # local ADNet checkpoint (original .pth.tar or ours); never downloaded
    # which weights of pretrained_path: null (auto) = the ones our best.pt was selected on (its best_source),
    # EMA for our other checkpoints that have them, the main weights of any other file; true / false = EMA / raw
    pretrained_ema: Optional[bool] = None
    pretrained_rename: List[str] = field(default_factory=list)   # "REGEX=REPLACEMENT": other names -> the authors'
    # DEVIATION switch: start from ImageNet weights of the timm backbone only (a local state-dict file, timm or
    # Facebook/torchvision names), decoder + HMT + head random. Used only when pretrained_path is null; the
    # published rows started from the authors' whole-ADNet IN1K (or ALL) checkpoints instead.
    backbone_weights: Optional[str] = None
    head_dim: int = 32
    dft_size: int = 15                           # 15 in the paper (minimum input 224 px)
    drop_path_rate: float = 0.0                  # the original declared one but never applied it (faithful: 0)
    backbone_kwargs: Dict[str, object] = field(default_factory=dict)   # extra timm kwargs (tiny demo variants)


@dataclass
class DataConfig:
    dataset: Literal["nih", "mimic", "chexpert", "all"] = "nih"
    nih_root: str = "data/nih"
    mimic_root: str = "data/mimic-cxr-jpg"
    chexpert_root: str = "data/chexpert"
    chexclusion_test_subjects: str = "data/mimic-cxr-jpg/testSet_SubjID.csv"   # CheXclusion's MIMIC test subjects
    mimic_image_ext: str = ".jpg"
    on_missing: Literal["error", "warn"] = "error"   # a listed image absent: stop naming it, or warn + skip
    verify_images: bool = False   # decode every listed image once before training (parallel, progress bar)
    on_bad_image: Literal["error", "warn"] = "error"   # an undecodable image: stop naming it, or warn + skip
    use_cache: bool = True                       # read <root>/cache (`prepare --cache`) when present: no decoding
    mimic_squash: int = 384                      # MIMIC images squashed to NxN first (the original's pre-resized
                                                 # 384x384 copies, aspect not kept); 0 = native aspect ratio
    # evaluation split / model selection
    honest_validation: bool = False              # False (faithful): select on the test split as the original did
    val_fraction: float = 0.1                    # honest: patient-disjoint fraction of train carved out as val
    val_seed: int = 0
    # ALL (21-class union) label construction
    all_label_bugs: bool = False                 # True: the original's inverted "No Finding" and 'Mas' typo
    # sizes and augmentation (spec section 2)
    train_size: int = 352
    test_size: int = 448
    crop_pct: float = 0.95                       # test: resize shorter side to floor(size / crop_pct), center crop
    interpolation: str = "bicubic"
    hflip: float = 0.5
    auto_augment: Optional[str] = "rand-m9-mstd0.5"   # timm RandAugment string; null = none
    # RandAugment's fill and interpolation: timm's defaults as the original (grey 128 fill, bilinear or bicubic at
    # random per operation, translate 250 px); "imagenet": ours before (ImageNet-mean fill, data.interpolation,
    # translate 0.45 x train_size)
    auto_augment_hparams: Literal["timm", "imagenet"] = "timm"
    scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    ratio: List[float] = field(default_factory=lambda: [0.75, 4.0 / 3.0])
    re_prob: float = 0.2                         # RandomErasing probability (1-3 boxes, value 0)
    re_count: int = 3
    repeats: int = 1                             # repeated-augmentation sampler (3 for NIH)
    drop_last: bool = True                       # false: keep the last partial batch (NIH: 2,876 it/epoch as published)
    batch_size: int = 30
    eval_batch_size: int = 64
    limit_train: int = 0                         # >0: only the first N training rows (smoke tests)
    limit_test: int = 0


@dataclass
class OptimConfig:
    lr: float = 1.0e-4
    min_lr: float = 1.0e-6
    weight_decay: float = 1.0e-4                 # on all parameters (the original applied it everywhere)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-6
    warmup_steps: int = 0


@dataclass
class EvalConfig:
    pick: Literal["best", "raw", "ema"] = "best"   # best: the better of raw and EMA (on the selection split)
    knn_k: List[int] = field(default_factory=lambda: [20, 40, 60, 80])
    knn_t: List[float] = field(default_factory=lambda: [16.0, 32.0, 64.0, 128.0])
    knn_select: Literal["test", "val"] = "test"  # test: the original's grid-cell choice; val: honest
    knn_batch_size: int = 64
    # k-NN threshold metrics (F1, recall, precision, accuracy; AUROC/AP never change): "original" = the weighted
    # neighbour-label sums went to torchmetrics as logits (sigmoid, then 0.5), so a class is predicted whenever any
    # neighbour carries it; "vote_fraction" = ours before: the sum divided by the sum of weights, at 0.5
    knn_threshold_rule: Literal["original", "vote_fraction"] = "original"


@dataclass
class ADNetConfig:
    name: str = "adnet"                          # run name: runs/adnet/<name>/<timestamp>
    published_key: Optional[str] = None          # row of adnet/published.yaml
    runs_root: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        d = self.data
        if not 0.0 < d.crop_pct <= 1.0:
            raise ValueError(f"data.crop_pct must be in (0, 1], got {d.crop_pct}")
        if d.honest_validation and not 0.0 < d.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
        if len(d.scale) != 2 or len(d.ratio) != 2:
            raise ValueError("data.scale and data.ratio need two numbers each")
        if d.mimic_squash < 0:
            raise ValueError(f"data.mimic_squash must be >= 0 (0 = off), got {d.mimic_squash}")
        if d.repeats < 1 or d.batch_size < 1:
            raise ValueError(f"data.repeats and data.batch_size must be >= 1 (got {d.repeats}, {d.batch_size})")
        for rule in self.model.pretrained_rename:
            if "=" not in rule:
                raise ValueError(f"model.pretrained_rename entry {rule!r} must look like REGEX=REPLACEMENT")
        if self.eval.knn_select == "val" and not d.honest_validation:
            raise ValueError("eval.knn_select=val needs data.honest_validation=true (a validation split)")
