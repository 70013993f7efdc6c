"""Metrics shared by the five methods: classification, localization, retrieval, zero-shot.

Import from the submodules (``from shared.metrics.retrieval import retrieval_metrics``); the most used names are
re-exported here. Every function takes numpy arrays or torch tensors and is vectorised (no Python loop per
sample or query).
"""
from .classification import bootstrap_ci, classification_table, per_class_auroc, render_table
from .localization import LocalizationMeter, boxes_to_mask, iou_iobb, resize_mask_nearest
from .retrieval import knn_search, retrieval_metrics, side_aware_labels, subgroup_mask
from .zeroshot import dedup_texts, image_text_retrieval, multiclass_accuracy, retrieval_recall

__all__ = [
    "per_class_auroc", "classification_table", "bootstrap_ci", "render_table",
    "boxes_to_mask", "resize_mask_nearest", "iou_iobb", "LocalizationMeter",
    "retrieval_metrics", "knn_search", "side_aware_labels", "subgroup_mask",
    "dedup_texts", "retrieval_recall", "image_text_retrieval", "multiclass_accuracy",
]
