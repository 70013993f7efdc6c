"""One way for every CXR-CLIP entry point (test, inference, finetune) to say which weights to evaluate.

    --run RUN_DIR                      our training run: its config.yaml, checkpoints/best.pt, tokenizer/
    -cfg CONFIG --weights FILE         a released checkpoint (original key names; --trust-checkpoint if pickled)
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from cxrclip.checkpoint import load_weights
from cxrclip.config import TrainConfig
from cxrclip.model import CXRClip
from cxrclip.tokenizer import load_tokenizer
from shared.config import ConfigError, load_config
from shared.engine import load_checkpoint, load_model_weights, select_device, weights_from_checkpoint


@dataclass
class Loaded:
    cfg: TrainConfig
    model: nn.Module          # on ``device``, eval mode
    weights: Path
    run_dir: Path | None      # None for released weights
    device: object

    def tokenizer(self):
        if self.run_dir is not None and (self.run_dir / "tokenizer").is_dir():
            return load_tokenizer(self.run_dir / "tokenizer")
        path = self.cfg.data.tokenizer or self.cfg.model.text.pretrained
        if not path or path == "build":
            raise ValueError("no tokenizer: set data.tokenizer to a local tokenizer directory")
        return load_tokenizer(path)


def add_weights_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", help="a finished training run directory (config, best.pt, tokenizer)")
    parser.add_argument("-cfg", "--config", help="config YAML (with --weights)")
    parser.add_argument("--weights", help="a released CXR-CLIP checkpoint (r50_m.tar, swint_mcc.tar, ...)")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects in --weights")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE")


def load_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace, image_only: bool = False) -> Loaded:
    """Config + model with the chosen weights; argument mistakes become ``parser.error`` messages."""
    try:
        if args.run:
            run_dir = Path(args.run)
            weights = run_dir / "checkpoints" / "best.pt"
            if not weights.is_file():
                raise FileNotFoundError(f"--run: no checkpoint {weights} (is {run_dir} a finished cxrclip.train run?)")
            cfg = load_config(TrainConfig, run_dir / "config.yaml", args.overrides)
        elif args.config and args.weights:
            run_dir, weights = None, Path(args.weights)
            if not weights.is_file():   # before anything else the config asks for
                raise FileNotFoundError(f"--weights: checkpoint not found: {weights}")
            cfg = load_config(TrainConfig, args.config, args.overrides)
        else:
            parser.error("give --run RUN_DIR, or -cfg CONFIG with --weights FILE")
    except ConfigError as err:
        parser.error(str(err))
    device = select_device(cfg.engine.device)
    # every weight comes from the checkpoint: build the architecture without reading ImageNet/BERT weight files
    # (BERT's and Swin's config.json still define the architecture)
    model = CXRClip(cfg.model, load_pretrained=False)
    if run_dir is not None:
        load_model_weights(model, weights_from_checkpoint(load_checkpoint(weights)))
    else:
        load_weights(model, weights, trust_pickle=args.trust_checkpoint, image_only=image_only)
    return Loaded(cfg, model.to(device).eval(), weights, run_dir, device)
