"""Pre-train CXR-CLIP: ``python -m cxrclip.train -cfg cxrclip/configs/r50_m.yaml [--set key=value ...]``.

AdamW, per-step linear warmup (1 epoch) then half-cosine to 0, AMP, DDP under torchrun; the checkpoint with the
lowest validation loss is kept (runs/cxrclip/<name>/<timestamp>/checkpoints/best.pt): the loss of each source is
the mean over its batches, and the sources are averaged with equal weight, as the original
(``data.val_loss=pooled``: the mean over all validation samples). Under DDP the validation
batches are shared out among the ranks and scored without the all-gather, so the validation loss is the
single-process one. Then, unless ``--no-test``, ``python -m cxrclip.test --run RUN`` (the config's ``eval:`` sets)
and ``python -m shared.report RUN`` (results.json, report.md in RUN).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `cd cxrclip && python train.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import argparse
import shutil

import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader

from cxrclip import prompts as P
from cxrclip.config import SourceConfig, TrainConfig
from cxrclip.data import (PairDataset, Sample, TextCollator, check_sample_images, chest14_samples,
                          chexpert_samples, custom_samples, eval_transform, mimic_samples, prompt_text_fn,
                          train_transform)
from cxrclip.loss import CXRClipLoss
from cxrclip.model import CXRClip
from cxrclip.tokenizer import build_vocab, load_tokenizer
from shared.cli import add_no_test_flag, cli_exit, test_after_training
from shared.config import parse_config
from shared.data.labels import CHEXPERT_LABELS
from shared.engine import (Trainer, cosine_schedule, create_run_dir, get_rank, get_world_size, is_distributed,
                           is_main_process, move_to_device, seed_everything)

def read_source(source: SourceConfig, train: bool, on_missing: str = "error") -> list[Sample]:
    split = "train" if train else "val"  # the shared readers name splits train / val / test
    if source.name == "mimic":
        return mimic_samples(source.root, split, on_missing=on_missing)
    if source.name == "chexpert":
        return chexpert_samples(source.root, split, source.holdout_csv, on_missing=on_missing)
    if source.name == "chest14":
        return chest14_samples(source.root, split, on_missing=on_missing)
    csv = source.train_csv if train else source.valid_csv
    if not csv:
        raise ValueError(f"source 'custom' needs {'train_csv' if train else 'valid_csv'}")
    return custom_samples(csv, source.image_root)


ORIGINAL_PROMPTS_URL = "https://github.com/kakaobrain/cxr-clip/blob/main/datasets/train_prompts_all.json"


def source_prompts(source: SourceConfig, index: int) -> dict | None:
    """The prompt table of a label-only source (None for image-text sources); ``index`` names its config key."""
    if source.name == "mimic":
        return None
    key = f"data.sources.{index}.prompt_file"
    if source.prompt_file == P.TEMPLATES:
        labels = {"chexpert": CHEXPERT_LABELS, "chest14": P.CHEST14_TASKS, "custom": source.tasks}[source.name]
        return P.template_prompts(labels)
    if not source.prompt_file or not Path(source.prompt_file).is_file():
        where = f"{source.prompt_file} not found" if source.prompt_file else "not set"
        raise FileNotFoundError(
            f"{key} {where}: the {source.name!r} source makes its texts from a prompt file; the paper's is the "
            f"original's train_prompts_all.json ({ORIGINAL_PROMPTS_URL}; see cxrclip/README.md), or set "
            f"{key}={P.TEMPLATES} for invented sentences")
    return P.load_prompts(source.prompt_file)


def build_datasets(cfg: TrainConfig, train: bool) -> tuple[ConcatDataset, list[str]]:
    """The concatenated dataset of every source, and the texts it can produce (for building a vocabulary)."""
    encoder = cfg.model.image.name
    transform = train_transform(cfg.data.image_size, encoder) if train else eval_transform(cfg.data.image_size,
                                                                                            encoder)
    parts, texts = [], []
    for index, source in enumerate(cfg.data.sources):
        samples = check_sample_images(read_source(source, train, cfg.data.on_missing), cfg.data.verify_images,
                                      cfg.data.on_bad_image)
        if not samples:
            raise ValueError(f"source {source.name!r} ({source.root or source.train_csv}) has no "
                             f"{'training' if train else 'validation'} samples")
        prompts = source_prompts(source, index)
        if prompts is None:
            parts.append(PairDataset(samples, transform, train))
            texts += [s for sample in samples for s in sample.sections]
        else:
            kind = "chexpert" if source.name == "chexpert" else "positives"
            tasks = P.CHEST14_TASKS if source.name == "chest14" else source.tasks
            parts.append(PairDataset(samples, transform, train, prompt_text_fn(prompts, kind, train, tasks,
                                                                              source.num_negs)))
            texts += [s for entry in prompts.values() for kind_ in entry.values() for s in kind_]
    return ConcatDataset(parts), texts


def prepare_tokenizer(cfg: TrainConfig, texts: list[str], run_dir: Path):
    """Load the configured tokenizer, or build a small vocabulary from the texts ("build": demo and tests)."""
    if cfg.data.tokenizer == "build":
        path = build_vocab(texts + P.CHEST14_TASKS, run_dir / "tokenizer")
    else:
        path = cfg.data.tokenizer or cfg.model.text.pretrained
        if not path:
            raise ValueError("data.tokenizer is empty: give a local tokenizer directory (e.g. a saved "
                             "Bio_ClinicalBERT) or 'build'")
    tokenizer = load_tokenizer(path)
    if not cfg.model.text.pretrained:
        cfg.model.text.bert.setdefault("vocab_size", len(tokenizer))
    return tokenizer


def clip_step(model, batch, criterion, gather: bool = True):
    """One forward over both views of images and texts (see TextCollator), then the loss on the halves."""
    image_emb, text_emb, scale = model(batch["images"], batch["input_ids"], batch["attention_mask"])
    b = image_emb.shape[0] // 2
    return criterion(image_emb[:b], image_emb[b:], text_emb[:b], text_emb[b:], scale, gather=gather)


def val_loader_for_rank(val_set, batch_size: int, collate_fn, num_workers: int = 0,
                        rank: int | None = None, world: int | None = None) -> DataLoader:
    """The validation batches a single process would form (in order, ``batch_size`` each), dealt round-robin to
    the ranks: every batch is scored on exactly one rank, with its own samples as the negatives."""
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world is None else world
    batches = [list(range(start, min(start + batch_size, len(val_set))))
               for start in range(0, len(val_set), batch_size)][rank::world]
    return DataLoader(val_set, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_fn)


def make_evaluate(val_loaders: dict[str, DataLoader], criterion, device, average: str = "per_dataset"):
    """Validation loss of each source (``val/loss_<source>``: the mean over its batches) and ``val/loss``, the
    checkpoint criterion: as the original, the equal-weight mean of the sources' losses (``average="pooled"``: the
    mean over all validation samples instead, so the largest source dominates). Under DDP each rank scores its
    share of every source's batches (see ``val_loader_for_rank``) without the all-gather and the sums are
    all-reduced: the values equal the single-process ones whatever the number of processes."""
    def evaluate(model) -> dict[str, float]:
        sums = torch.zeros(len(val_loaders), 4, dtype=torch.float64, device=device)  # batch losses, batches,
        for row, loader in enumerate(val_loaders.values()):                          # sample losses, samples
            for batch in loader:
                batch = move_to_device(batch, device)
                loss, _ = clip_step(model, batch, criterion, gather=False)
                n = batch["images"].shape[0] // 2
                sums[row] += torch.tensor([loss.item(), 1.0, loss.item() * n, n], dtype=torch.float64, device=device)
        if is_distributed():
            dist.all_reduce(sums)
        per_source = (sums[:, 0] / sums[:, 1].clamp(min=1)).tolist()
        metrics = {f"val/loss_{name}": value for name, value in zip(val_loaders, per_source)}
        metrics["val/loss"] = (sum(per_source) / len(per_source) if average == "per_dataset"
                               else (sums[:, 2].sum() / sums[:, 3].sum().clamp(min=1)).item())
        return metrics
    return evaluate


def source_names(sources: list[SourceConfig]) -> list[str]:
    """Metric names of the sources: their names, numbered when one occurs twice (``custom0``, ``custom1``)."""
    names = [source.name for source in sources]
    return [f"{name}{i}" if names.count(name) > 1 else name for i, name in enumerate(names)]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resume", default=None, help="run directory to resume")
    add_no_test_flag(parser)
    cfg, args = parse_config(TrainConfig, argv, parser=parser, example="optim.lr=1e-4 engine.epochs=2")
    seed_everything(cfg.engine.seed, cfg.engine.deterministic)
    run_dir = create_run_dir("cxrclip", cfg.name, root=cfg.output_root, resume=args.resume, root_key="output_root")
    try:
        train_run(cfg, run_dir)
    except BaseException:
        # a new run that failed before writing any file (bad data root, ...) leaves no empty run folder behind
        if not args.resume and is_main_process() and not any(p.is_file() for p in run_dir.rglob("*")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    print(f"run directory: {run_dir}", flush=True)
    from cxrclip.test import main as test_main   # imported here: only a run that trained needs the test code
    test_after_training("cxrclip", run_dir, args.no_test, test_main)
    return run_dir


def train_run(cfg: TrainConfig, run_dir: Path) -> Path:
    """Train ``cfg`` into ``run_dir`` (resuming from its checkpoints/last.pt when there is one)."""
    train_set, train_texts = build_datasets(cfg, train=True)
    val_set, val_texts = build_datasets(cfg, train=False)
    tokenizer = prepare_tokenizer(cfg, train_texts + val_texts, run_dir)
    model = CXRClip(cfg.model)
    criterion = CXRClipLoss(cfg.loss.i2i_weight, cfg.loss.t2t_weight)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    trainer = Trainer(model, optimizer, cfg.engine, run_dir, config=cfg, scheduler_interval="iter",
                      loss_fn=lambda m, batch: clip_step(m, batch, criterion))
    train_loader = trainer.make_loader(train_set, cfg.data.batch_size, shuffle=True, drop_last=len(train_set) >
                                       cfg.data.batch_size, collate_fn=TextCollator(tokenizer, cfg.data.max_length))
    val_collate = TextCollator(tokenizer, cfg.data.max_length, train=False)
    val_loaders = {name: val_loader_for_rank(part, cfg.data.eval_batch_size, val_collate, cfg.engine.num_workers)
                   for name, part in zip(source_names(cfg.data.sources), val_set.datasets)}
    warmup = int(cfg.optim.warmup_epochs * trainer.steps_per_epoch(train_loader))
    trainer.scheduler = cosine_schedule(optimizer, total_steps=trainer.total_steps(train_loader), min_lr=0.0,
                                        warmup_steps=warmup)
    trainer.evaluate = make_evaluate(val_loaders, criterion, trainer.device, cfg.data.val_loss)
    best = trainer.fit(train_loader)
    trainer.log(f"best validation: {best}")
    return run_dir


if __name__ == "__main__":
    cli_exit("python -m cxrclip.train", main)
