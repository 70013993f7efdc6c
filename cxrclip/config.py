"""Typed configuration of CXR-CLIP runs (one YAML per published setting, see configs/)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cxrclip.model import ModelConfig
from shared.engine import EngineConfig


@dataclass
class SourceConfig:
    """One training/validation source; several are concatenated (M, M+C, M+C+C14, or a custom set)."""

    name: Literal["mimic", "chexpert", "chest14", "custom"]
    root: str = ""                      # dataset root in its real layout (mimic / chexpert / chest14)
    train_csv: str | None = None        # custom (CGMH format): image (list), text_label (list)
    valid_csv: str | None = None
    image_root: str | None = None       # custom: folder the CSV's image paths are relative to
    prompt_file: str | None = None      # {label: {pos, neg, unc}} (the original's train_prompts_all.json);
    #                                     required by label-only sources; "templates" = invented sentences
    holdout_csv: str | None = None      # chexpert: GLoRIA's chexpert_5x200.csv, whose patients are left out
    tasks: list[str] = field(default_factory=list)  # custom: the label set negatives are drawn from
    num_negs: int = 0                   # chest14: 3 in the paper; custom: 0 by default


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig(name="mimic")])
    tokenizer: str = ""                 # local dir with vocab.txt / tokenizer files; "build" = from the texts
    image_size: int = 224
    max_length: int = 256
    batch_size: int = 128               # per process (the paper: 128 global)
    eval_batch_size: int = 256
    val_loss: Literal["per_dataset", "pooled"] = "per_dataset"  # best checkpoint: mean of the sources' mean
    #                                   batch losses (the original), or the mean over all validation samples
    on_missing: Literal["error", "warn"] = "error"   # a listed image absent: stop naming it, or warn + skip
    verify_images: bool = False         # decode every listed image once before training (parallel, progress bar)
    on_bad_image: Literal["error", "warn"] = "error"   # an undecodable image: stop naming it, or warn + skip
    #                                   (a study keeps its other views; one left without any image is dropped)


@dataclass
class LossConfig:
    i2i_weight: float = 1.0             # ICL; 0 with t2t 0 = plain CLIP
    t2t_weight: float = 0.5             # TCL


@dataclass
class OptimConfig:
    lr: float = 5e-5
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0          # per-step linear warmup, then half-cosine to 0


@dataclass
class EvalConfig:
    """What test.py evaluates (each part runs when its data is given)."""

    retrieval_root: str | None = None   # image<->report retrieval: a MIMIC / OpenI root or an (image, text) CSV
    retrieval_layout: Literal["mimic", "openi", "csv"] = "mimic"  # csv: the original's mimic_cxr_test/openi_test
    retrieval_split: str = "test"       # mimic only (OpenI is all test)
    retrieval_image_root: str | None = None  # csv: folder its image paths are relative to (default: the CSV's)
    openi_projections: str | None = None  # openi: Kaggle's indiana_projections.csv (else first image = frontal)
    zeroshot_root: str | None = None    # MIMIC/CheXpert-layout root: binary zero-shot per class on its test split
    zeroshot_layout: Literal["mimic", "chexpert"] = "mimic"
    zeroshot_csv: str | None = None     # or a classification CSV (RSNA / SIIM / VinDr test, see data.py)
    zeroshot_image_root: str | None = None
    zeroshot_label_names: list[str] = field(default_factory=list)  # names of a list-valued 'label' (VinDr's 20)
    zeroshot_classes: list[str] = field(default_factory=lambda: ["Atelectasis", "Cardiomegaly", "Consolidation",
                                                                 "Edema", "Pleural Effusion"])
    #                                   [] with zeroshot_csv: every column of the CSV but 'image' 
    binary_prompts: dict[str, list[str]] = field(default_factory=dict)  # {class: [negative, positive]};
    #                                   default ["No <class>", "<class>"]; RSNA: ["No evidence of pneumonia",
    #                                   "Findings suggesting pneumonia."]
    chexpert5x200_csv: str | None = None  # GLoRIA's csv: Path, Report Impression, 5 class columns; zero-shot and,
    #                                   when it has 'Report Impression', image<->text retrieval
    chexpert5x200_image_root: str | None = None
    class_prompts: str | None = None    # {class: [prompt, ...]} for 5x200; None -> the published 489 prompts


@dataclass
class TrainConfig:
    name: str = "cxrclip"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(epochs=15, amp="fp16", monitor="val/loss",
                                                                      monitor_mode="min"))
    output_root: str = "runs"
