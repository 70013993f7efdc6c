"""Shared pytest fixtures (kept minimal): where the shipped real files are, the real NIH index, a tiny NIH root."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1]
FILES = SHARED / "data" / "files"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def files_dir() -> Path:
    """shared/data/files: the shipped real metadata (NIH, HAM, CheXNet)."""
    return FILES


@pytest.fixture(scope="session")
def real_images_dir() -> Path:
    """shared/tests/fixtures/real_images: three real NIH PNGs and ADNet's RGBA sample."""
    return FIXTURES / "real_images"


@pytest.fixture(scope="session")
def nih_real_index():
    """The real NIH Data_Entry_2017_v2020 read by shared.data.nih.read_index (no image files; read once)."""
    from shared.data import nih
    return nih.read_index(FILES / "nih", check_files=False)


def write_nih_root(root: Path, entries: list[tuple[str, str, str]], image_size: int = 16,
                   layout: str = "images", lists: dict[str, list[str]] | None = None,
                   write_images: bool = True) -> Path:
    """A tiny NIH layout: Data_Entry_2017.csv from (image, findings, patient) rows, PNGs, optional split lists.

    ``layout="images"`` puts PNGs in root/images/; ``"kaggle"`` spreads them over root/images_00{1,2}/images/.
    ``lists``: {"train_val_list": [...], "test_list": [...]}; default: every image in train_val_list and an empty
    test_list; ``{}`` writes no list files.
    """
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
             "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"]
    for k, (name, findings, patient) in enumerate(entries):
        lines.append(f"{name},{findings},{k},{patient},{40 + k},M,PA,{image_size},{image_size},0.143,0.143,")
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    if write_images:
        rng = np.random.default_rng(0)
        for k, (name, _, _) in enumerate(entries):
            sub = root / "images" if layout == "images" else root / f"images_00{1 + k % 2}" / "images"
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (image_size, image_size), dtype=np.uint8)).save(sub / name)
    if lists is None:
        lists = {"train_val_list": [e[0] for e in entries], "test_list": []}
    for split, names in lists.items():
        (root / f"{split}.txt").write_text("\n".join(names))
    return root


@pytest.fixture
def nih_root_factory(tmp_path):
    """Call ``nih_root_factory(entries, **kw)`` to get a tiny NIH root (see ``write_nih_root``)."""
    counter = iter(range(1000))

    def make(entries, **kwargs):
        return write_nih_root(tmp_path / f"nih{next(counter)}", entries, **kwargs)

    return make


@pytest.fixture
def restore_torch_flags():
    """seed_everything flips process-wide flags (deterministic algorithms, cuDNN) and the global RNG; leave them
    as found for the test modules that run after (engine tests use this through ``pytestmark``)."""
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    rng = torch.get_rng_state()
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]
    torch.set_rng_state(rng)
