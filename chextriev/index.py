"""A retrieval index for ``chextriev.predict``: the embeddings of a prepared set of labelled images, made once.

    python -m chextriev.index build --run runs/chextriev/v6/<ts> [--data PREPARED] --out INDEX [--split all]

Embeds every image of ``--split`` (train, val, test, or all; default all) of the prepared directory (default: the
run's ``data.prepared``) with the run's model, exactly as ``chextriev.test`` does, and writes INDEX/:

    embeddings.npy   (N, D) float32 retrieval embeddings, L2-normalised (cosine = inner product)
    index.csv        image_id, path, split and the 9 image labels of each row
    atlas.npy        (18, 4) float32 mean anatomy box [x, y, w, h] as fractions of the image size: where predict
                     cuts the 18 anatomy crops of a user image, which has no Chest ImaGenome scene graph
    adjacency.npy    the prepared co-occurrence adjacency (V1 and AnaXNet build their graph from it)
    meta.json        run, config, weights, split, count, dimension and the model's weight fingerprint (predict
                     refuses an index built with other weights: their embeddings are not comparable)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):  # `cd chextriev && python index.py ...` runs as from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from shared.cli import run_from_repo_root
    run_from_repo_root(__name__)

import numpy as np
import pandas as pd
import torch

from shared.cli import cli_exit
from shared.config import load_config
from shared.data.labels import IMAGENOME_FINDINGS
from shared.engine import load_checkpoint, load_model_weights, weights_from_checkpoint

from chextriev.config import ChextrievConfig
from chextriev.data import weights_fingerprint
from chextriev.models import build_model
from chextriev.prepare import Prepared
from chextriev.train import load_adjacency, make_datasets, predict

FILES = ("embeddings.npy", "index.csv", "atlas.npy", "adjacency.npy", "meta.json")


def load_chextriev_weights(model: torch.nn.Module, path: Path) -> None:
    """The one place index and predict load weights (our shared.engine checkpoints; best.pt's selected weights)."""
    load_model_weights(model, weights_from_checkpoint(load_checkpoint(path, map_location="cpu")))


def trained_model(cfg: ChextrievConfig, weights: Path, adjacency: Optional[torch.Tensor]) -> torch.nn.Module:
    """The config's model with every weight (the frozen CNN's included) from ``weights``, in eval mode."""
    model = build_model(dataclasses.replace(cfg.model, pretrained=False, pretrained_path=None), adjacency)
    load_chextriev_weights(model, weights)
    return model.eval()


def anatomy_atlas(prepared: Prepared, rows: np.ndarray) -> np.ndarray:
    """(18, 4) mean [x, y, w, h] of the anatomy boxes of ``rows``, as fractions of each image's width/height."""
    frame = prepared.frame.iloc[rows]
    if frame[["columns", "rows"]].isna().any().any():
        from PIL import Image
        sizes = np.array([Image.open(p).size for p in frame["path"]], np.float32)   # header only: (W, H)
    else:
        sizes = frame[["columns", "rows"]].to_numpy(np.float32)
    scale = np.concatenate([sizes, sizes], axis=1)[:, None, :]                         # (N, 1, [W, H, W, H])
    return (prepared.boxes[rows] / scale).mean(0).astype(np.float32)


def build(cfg: ChextrievConfig, weights: Path, prepared_dir: Path, out: Path, split: str = "all",
          device: str = "cpu", run_dir: Optional[Path] = None) -> Path:
    prepared = Prepared(prepared_dir)
    adjacency = load_adjacency(cfg, prepared)
    model = trained_model(cfg, weights, adjacency).to(device)
    splits = sorted(prepared.frame["split"].unique()) if split == "all" else [split]
    sets = make_datasets(cfg, prepared, model, splits, device=device)
    embeddings, rows = [], []
    for name in splits:
        loader = torch.utils.data.DataLoader(sets[name], batch_size=cfg.data.eval_batch_size, shuffle=False)
        embeddings.append(predict(model, loader, device)["embedding"].numpy())
        rows.append(getattr(sets[name], "base", sets[name]).rows)
    emb = np.concatenate(embeddings).astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    rows = np.concatenate(rows)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "embeddings.npy", emb)
    frame = prepared.frame.iloc[rows][["image_id", "path", "split", *IMAGENOME_FINDINGS]]
    frame.to_csv(out / "index.csv", index=False)
    np.save(out / "atlas.npy", anatomy_atlas(prepared, rows))
    np.save(out / "adjacency.npy", prepared.adjacency)
    meta = {"run": str(run_dir) if run_dir else None, "config": cfg.name, "weights": str(weights),
            "prepared": str(prepared_dir), "split": split, "count": int(len(emb)), "dim": int(emb.shape[1]),
            "model": cfg.model.name, "fingerprint": weights_fingerprint(model)}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


@dataclasses.dataclass
class Index:
    """An index directory, loaded (see the module docstring)."""
    embeddings: np.ndarray
    frame: pd.DataFrame
    atlas: np.ndarray
    adjacency: np.ndarray
    meta: dict

    @classmethod
    def load(cls, directory: str | Path) -> "Index":
        d = Path(directory)
        missing = [f for f in FILES if not (d / f).is_file()]
        if missing:
            raise FileNotFoundError(f"--index {d}: not a CheXtriev index (missing {missing}); make one with "
                                    f"python -m chextriev.index build --run RUN --out {d}")
        return cls(np.load(d / "embeddings.npy"), pd.read_csv(d / "index.csv", dtype={"image_id": str}),
                   np.load(d / "atlas.npy"), np.load(d / "adjacency.npy"), json.loads((d / "meta.json").read_text()))


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m chextriev.index", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="embed a prepared image set with a trained run")
    b.add_argument("--run", required=True, help="a chextriev.train run directory")
    b.add_argument("--weights", help="checkpoint (default RUN/checkpoints/best.pt)")
    b.add_argument("--data", help="prepared directory (default: the run's data.prepared)")
    b.add_argument("--out", required=True, help="index directory to write")
    b.add_argument("--split", default="all", choices=["train", "val", "test", "all"])
    b.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from shared.predict import resolve_run
    files = resolve_run(args.run, args.weights, None)
    cfg = load_config(ChextrievConfig, files.config)
    out = build(cfg, files.weights, Path(args.data or cfg.data.prepared), Path(args.out), args.split, args.device,
                files.run_dir)
    print(f"index: {out} ({json.loads((out / 'meta.json').read_text())['count']} images)")
    return out


if __name__ == "__main__":
    cli_exit("python -m chextriev.index", main)
