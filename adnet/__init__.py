"""ADNet (Kang, Kim, Ryu, CMPB 2024): attentional decoder + harmonic magnitude transform for chest X-rays.

    import adnet
    model = adnet.create_model("convnext_tiny_ADNet_IN1K_NIH")                       # random weights, 14 classes
    model = adnet.create_model("convnext_tiny_ADNet_IN1K_NIH", pretrained_path="convnext_tiny_ADNet_IN1K_NIH.pth.tar")
"""
from .model import ADNet, MODEL_NAMES, build_model
from .checkpoint import create_model, load_weights

__all__ = ["ADNet", "MODEL_NAMES", "build_model", "create_model", "load_weights"]
