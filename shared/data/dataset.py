"""``ImageDataset``: an index DataFrame -> torch Dataset of ``{"image", "labels", "index"}`` items.

::

    from shared.data import nih, dataset, transforms
    frame = nih.read_index("/data/nih")
    test = frame[frame.split == "test"].reset_index(drop=True)
    ds = dataset.ImageDataset(test, frame.attrs["label_columns"], transform=transforms.eval_transform(448, 0.95))
    item = ds[0]   # {"image": float tensor (3, 448, 448), "labels": float32 tensor (14,), "index": 0}

Each item decodes its image exactly once: from ``cache.get(image_id)`` when a cache is given and holds the image
(any object with ``.get(image_id) -> np.ndarray | None``, e.g. ``shared.data.cache.ImageCache``), otherwise with
``shared.data.images.load_image(path)``; the uint8 grayscale array becomes a 3-channel PIL image
(``images.to_rgb``) and then goes through ``transform`` (default: ``ToTensor``, values in [0, 1]).
``index`` is the row position in ``frame``, so predictions map back to ``frame.iloc[index]``.
Label values are passed through as float32, NaN included (a masked label under an "ignore" policy).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ._common import DataError, require_columns
from .images import load_image, to_rgb

__all__ = ["ImageDataset"]


class ImageDataset(Dataset):
    """Rows of an index DataFrame as ``{"image": transform(PIL RGB), "labels": float32 tensor, "index": int}``.

    ``frame`` needs ``path`` (and ``image_id`` when ``cache`` is given) and the ``label_columns``.
    ``label_columns`` may be empty (unlabelled data: ``labels`` is then a tensor of shape (0,)).
    """

    def __init__(self, frame: pd.DataFrame, label_columns: Sequence[str], transform: Callable | None = None,
                 cache: Any = None, path_column: str = "path", id_column: str = "image_id") -> None:
        label_columns = list(label_columns)
        needed = [path_column] + ([id_column] if cache is not None else []) + label_columns
        require_columns(frame, needed, "ImageDataset frame")
        labels = np.empty((len(frame), len(label_columns)), dtype=np.float32)
        for j, col in enumerate(label_columns):
            try:
                labels[:, j] = frame[col].to_numpy(dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise DataError(f"ImageDataset: label column {col!r} is not numeric: {exc}") from exc
        self.labels = labels
        self.label_columns = label_columns
        # numpy string arrays, not Python lists: no copy-on-read growth in DataLoader workers
        self.paths = np.asarray(frame[path_column].astype(str).to_numpy(), dtype=np.str_)
        self.image_ids = (np.asarray(frame[id_column].astype(str).to_numpy(), dtype=np.str_)
                          if id_column in frame.columns else None)
        self.transform = transform
        self.cache = cache
        if transform is None:
            from torchvision.transforms import ToTensor
            self.transform = ToTensor()

    def __len__(self) -> int:
        return len(self.paths)

    def load_array(self, index: int) -> np.ndarray:
        """The (H, W) uint8 image of row ``index`` (from the cache when it has it, else decoded from disk)."""
        if self.cache is not None:
            arr = self.cache.get(str(self.image_ids[index]))
            if arr is not None:
                return np.asarray(arr)
        return load_image(str(self.paths[index]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += len(self)
        image = to_rgb(self.load_array(index))
        return {"image": self.transform(image), "labels": torch.from_numpy(self.labels[index].copy()),
                "index": index}
