"""AG-CNN configuration: one typed tree, read from configs/*.yaml by ``shared.config``.

Defaults are the paper's ResNet-50 setting (spec section 2): C = 15, max pooling, tau = 0.7 on max|f|,
three stages of 50 epochs, SGD(momentum 0.9, wd 1e-4) lr 0.01 / 10 once after 20 epochs, batch 128 / 64 / 64,
resize 256x256 -> random-resized-crop 224 + hflip (train), resize 256x256 -> center-crop 224 (test).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shared.engine import EngineConfig


@dataclass
class ModelConfig:
    backbone: str = "resnet50"                 # any timm CNN: resnet50 (paper main), densenet121
    num_classes: int = 15                      # 15 = 14 findings + No Finding (paper); 14 = seed repository
    pool: Literal["max", "avg"] = "max"        # global MAX pooling (paper); avg = seed repository
    pretrained: bool = True                    # ImageNet init through timm's hub (needs network) ...
    pretrained_tag: str = "tv_in1k"            # ... of torchvision's weights (what 2018 PyTorch code used);
    #                                            "" = timm's default tag (resnet50.a1_in1k, densenet121.ra_in1k)
    pretrained_path: str | None = None         # ... or from this local file (timm/torchvision state dict)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)   # e.g. a tiny DenseNet for tests
    drop_rate: float = 0.0
    tau: float = 0.7                           # mask threshold (paper, validated)
    heatmap_stat: Literal["max", "l1", "l2"] = "max"   # channel statistic (paper Table III)
    threshold: Literal["fixed", "otsu"] = "fixed"     # otsu = seed repository
    crop_size: int = 224
    crop_method: Literal["roi_align", "interpolate"] = "roi_align"
    max_label_iters: int | None = None         # cap of the batched connected-component labelling
    crop_labeler: Literal["auto", "tensor", "scipy"] = "auto"  # auto: scipy.ndimage on CPU, tensor ops on GPU
    seed_fusion_fc: str | None = None          # the seed repository's fusion FC file (DenseNet-121, C=14)


@dataclass
class DataConfig:
    root: str = "data/nih"                     # NIH ChestX-ray14 (Data_Entry_2017*.csv + images/)
    split: Literal["chexnet", "official"] = "chexnet"
    split_root: str | None = None              # dir with CheXNet {train,val,test}_list.txt; None = shipped copies
    val_fraction: float = 0.1                  # official split: patient-disjoint validation carve-out
    split_seed: int = 0
    on_missing: Literal["error", "warn"] = "error"   # images listed but absent: fail, or warn + count in results
    verify_images: bool = False   # decode every listed image once before training (parallel, progress bar)
    on_bad_image: Literal["error", "warn"] = "error"   # an undecodable image: stop naming it, or warn + skip
    use_cache: bool = True                     # read <root>/cache (`prepare --cache`) when present: no decoding
    resize: int = 256                          # resize to resize x resize (aspect not kept, as the paper)
    image_size: int = 224                      # random-resized crop (train) / center crop (test)
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    hflip: bool = True
    interpolation: str = "bilinear"


@dataclass
class StageConfig:
    epochs: int = 50
    batch_size: int = 128
    lr: float = 0.01
    # lr x lr_gamma at each listed epoch (MultiStepLR); an int n instead = every n epochs (StepLR: 20 -> 20, 40)
    lr_step_epochs: int | list[int] = field(default_factory=lambda: [20])
    lr_gamma: float = 0.1
    max_iters: int = 0                         # >0: stop this stage after that many optimizer steps (debug)


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class TrainConfig:
    mode: Literal["staged", "joint"] = "staged"   # joint = seed repository: one stage, 0.8 Lg + 0.1 Ll + 0.1 Lf
    global_stage: StageConfig = field(default_factory=lambda: StageConfig(batch_size=128))
    local_stage: StageConfig = field(default_factory=lambda: StageConfig(batch_size=64))
    fusion_stage: StageConfig = field(default_factory=lambda: StageConfig(batch_size=64))
    joint_stage: StageConfig = field(default_factory=lambda: StageConfig(batch_size=32, lr=1e-4))
    joint_weights: tuple[float, float, float] = (0.8, 0.1, 0.1)
    eval_batch_size: int = 64


@dataclass
class TestConfig:
    taus: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    overlays: int = 8                          # heatmap + box pictures written to RUN/overlays/
    batch_size: int = 64
    split: str = "test"


@dataclass
class Config:
    name: str = "agcnn"
    runs: str = "runs"
    published_key: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(monitor="val/auroc_mean", monitor_mode="max"))
