"""Dataset readers of the real on-disk layouts, splits, image decoding, the torch Dataset and shared transforms.

Import the submodule you need (this package itself imports only pandas, for ``DataError``)::

    from shared.data import nih, chexpert, mimic, imagenome, openi   # read_index(root, ...) -> DataFrame
    from shared.data import splits                                   # official / published / patient-disjoint
    from shared.data import images                                   # load_image(path) -> uint8 (H, W)
    from shared.data.dataset import ImageDataset                     # frame -> {"image", "labels", "index"}
    from shared.data import transforms                               # IMAGENET_MEAN, eval_transform(...)
    from shared.data import labels                                   # every dataset's label names

Every reader returns one index DataFrame with at least ``path`` (absolute), ``image_id``, ``patient_id`` (str),
``split`` ('train' / 'val' / 'test', or the dataset's own name where it has no split) and one float32 column per
label named as in ``labels``; ``frame.attrs["label_columns"]`` lists them. Bad input raises one error naming the
file, line or column (``DataError``, a ``ValueError``; ``FileNotFoundError`` for missing images, or with
``on_missing="warn"`` a warning that counts the skipped rows). Nothing is dropped silently.

Readers check that image files EXIST (one directory listing, not one stat per row). Whether they DECODE is checked
when an image is loaded (``images.load_image`` raises ``ImageReadError`` naming the file), or up front for a
whole index with ``images.verify_images(frame["path"])`` (threaded header check, one error listing the bad files).

Split names are 'train' / 'val' / 'test' (MIMIC's "validate" and CheXpert's valid.csv become 'val'); NIH images
in neither official list are 'unlisted' (with a warning). Patient, subject and study ids are strings.
"""
from ._common import DataError

__all__ = ["DataError"]
