"""HAM's typed configuration (one YAML per published setting, ``_base_`` inheritance) and ``build_model``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared.engine import EngineConfig
from shared.weights import read_state_dict_file, torchvision_imagenet_state_dict

from .checkpoint import load_weights
from .data import DataConfig
from .losses import LossWeights
from .model import HAM

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    using_pooling: bool = True
    downsampling: int = 8
    using_dilation: bool = True
    pretrained: bool = True                 # ImageNet init (torchvision IMAGENET1K_V1, as the original)
    pretrained_path: str | None = None      # local torchvision-format state dict; wins over the download
    init_weights: str | None = None         # start from a whole HAM (ours or the authors' .pth; ham.checkpoint)
    #                                         instead of ImageNet: fine-tuning
    fa_channels: int = 512
    head_channels: int = 512
    dropout: float = 0.1
    lse_r: float = 6.0
    cam_w: float = 100.0
    cam_sigma: float = 0.4


@dataclass
class OptimConfig:
    lr: float = 2e-5
    weight_decay: float = 1e-4              # Adam's L2 weight decay
    step_epochs: int = 10                   # lr *= gamma every step_epochs epochs
    gamma: float = 0.1
    batch_size: int = 24                    # images per optimizer step (with engine.grad_accum 1)
    micro_batch: int = 0                    # >0: forward/backward in micro-batches of this size, loss and
    #                                         gradients equal to the whole batch's (ham.train.make_loss_fn)
    eval_batch_size: int = 24


@dataclass
class EvalConfig:
    loc_threshold: float = 0.999            # P = refined_c >= 0.999 (normalised CAM >= 0.4691)
    localization_in_val: bool = True        # T(IoU) of the validation box images at each validation
    loc_checkpoints: Literal["by_metric", "best"] = "by_metric"    # ham.test --run: T(IoU) from best_tiou.pt, T(IoBB) from best_tiobb.pt
    #     (the original's three best checkpoints side by side); "best": every table from best.pt (ours before)
    visual_max_images: int = 0              # visual.py: cap on the box images of the HTML page (0: all of them)
    visual_thumb: int = 256                 # visual.py: pictures written as JPEG thumbnails of this size (0: input)


@dataclass
class HAMConfig:
    name: str = "ham"
    published_key: str | None = None
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    eval: EvalConfig = field(default_factory=EvalConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

def build_model(cfg: ModelConfig, num_classes: int) -> HAM:
    """HAM with every weight from ``init_weights`` (ours or the authors' file, :func:`ham.checkpoint.load_weights`),
    or the backbone's ImageNet weights from ``pretrained_path`` (a local file) or, with ``pretrained`` and no path,
    torchvision's hub (needs network or the torch hub cache; a failed download raises
    ``shared.weights.PretrainedWeightsError`` naming ``model.pretrained_path``)."""
    model = HAM(num_classes=num_classes, backbone=cfg.backbone, using_pooling=cfg.using_pooling,
                downsampling=cfg.downsampling, using_dilation=cfg.using_dilation, fa_channels=cfg.fa_channels,
                head_channels=cfg.head_channels, dropout=cfg.dropout, lse_r=cfg.lse_r, cam_w=cfg.cam_w,
                cam_sigma=cfg.cam_sigma)
    if cfg.init_weights:
        load_weights(model, cfg.init_weights)
        return model
    state = None
    if cfg.pretrained_path:
        state = read_state_dict_file(cfg.pretrained_path, "model.pretrained_path")
        source = cfg.pretrained_path
    elif cfg.pretrained:
        # offline / no network: one line naming model.pretrained_path, not urllib's traceback
        state = torchvision_imagenet_state_dict(cfg.backbone, key="model.pretrained_path", off_key="model.pretrained")
        source = f"torchvision {cfg.backbone} IMAGENET1K_V1"
    if state is not None:
        load_backbone_weights(model, state, source)
    return model


def load_backbone_weights(model: HAM, state: dict, source: str = "state dict") -> None:
    """Load a torchvision/timm ResNet state dict (``fc.*`` ignored, ``module.``/``backbone.`` prefixes stripped)
    into ``model.backbone``; raises naming missing/unexpected keys. A projection HAM adds (layer1 of a
    BasicBlock net without pooling at ds 32) keeps its fresh init."""
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("layer1.0.downsample")]
    if missing or unexpected:
        raise ValueError(f"{source}: not a {model.backbone.__class__.__name__} state dict for this backbone "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
