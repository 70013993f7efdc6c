"""CXR-CLIP architecture: published parameter counts, pooling choices, normalised 512-d embeddings."""
from __future__ import annotations

import pytest
import torch

from cxrclip.model import CXRClip, ImageEncoderConfig, ModelConfig, TextEncoderConfig

CLINICAL_BERT = dict(vocab_size=28996)  # BERT-base geometry with Bio_ClinicalBERT's vocabulary
TINY_BERT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
TINY_SWIN = dict(image_size=64, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("image, expected_millions", [("resnet50", 133.26), ("swin", 136.62)])
def test_parameter_counts_match_the_paper(image, expected_millions):
    model = CXRClip(ModelConfig(image=ImageEncoderConfig(name=image), text=TextEncoderConfig(bert=CLINICAL_BERT)))
    assert round(n_params(model) / 1e6, 2) == expected_millions
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07)


def tiny(pooling="eos", image="resnet18", swin_pooling="first_token"):
    cfg = ModelConfig(image=ImageEncoderConfig(name=image, swin=TINY_SWIN, swin_pooling=swin_pooling),
                      text=TextEncoderConfig(bert=TINY_BERT, pooling=pooling), projection_dim=16)
    return CXRClip(cfg).eval()


def test_embeddings_are_unit_norm_and_projected():
    model = tiny()
    img, txt, scale = model(torch.randn(2, 3, 64, 64), torch.randint(5, 60, (2, 7)), torch.ones(2, 7, dtype=torch.long))
    assert img.shape == txt.shape == (2, 16)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(2))


def test_eos_pooling_reads_the_last_real_token():
    model = tiny()
    ids = torch.tensor([[2, 10, 11, 3, 0, 0], [2, 12, 13, 14, 15, 3]])
    mask = (ids != 0).long()
    hidden = model.text_encoder.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = model.text_encoder(ids, mask)
    torch.testing.assert_close(pooled[0], hidden[0, 3])  # [SEP] of the padded row
    torch.testing.assert_close(pooled[1], hidden[1, 5])


def test_swin_first_token_is_faithful_and_mean_is_the_fork():
    torch.manual_seed(0)
    first = tiny(image="swin")
    mean = tiny(image="swin", swin_pooling="mean")
    mean.load_state_dict(first.state_dict())
    x = torch.randn(2, 3, 64, 64)
    hidden = first.image_encoder.swin(pixel_values=x).last_hidden_state
    torch.testing.assert_close(first.image_encoder(x), hidden[:, 0])
    torch.testing.assert_close(mean.image_encoder(x), hidden.mean(1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("image", ["resnet18", "swin"])
def test_grad_checkpointing_same_gradients_less_saved_memory(image):
    """The memory switch recomputes BERT/Swin layers in backward: dropout masks replay, so the gradients are equal,
    and autograd keeps fewer bytes for backward."""
    cfg = dict(image=ImageEncoderConfig(name=image, swin=TINY_SWIN),
               text=TextEncoderConfig(bert={**TINY_BERT, "hidden_dropout_prob": 0.3}), projection_dim=16)
    grads, saved = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = CXRClip(ModelConfig(**cfg, grad_checkpointing=checkpointing)).train()
        torch.manual_seed(1)
        nbytes = []

        def pack(t):
            nbytes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            txt = model.encode_text(torch.randint(5, 60, (2, 7)), torch.ones(2, 7, dtype=torch.long))
        img = model.encode_image(torch.randn(2, 3, 64, 64))
        (model.logit_scale.exp() * img @ txt.T).logsumexp(-1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        saved.append(sum(nbytes))
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)
    assert saved[1] < saved[0]
