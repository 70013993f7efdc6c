"""Three-stage training plan: what each stage trains, that nothing reaches the frozen parts, joint loss weights."""
import pytest
import torch
import torch.nn.functional as F

from agcnn.model import AGCNN
from agcnn.train import make_loss, make_optimizer, stage_plan

TINY = {"growth_rate": 8, "block_config": (1, 1, 1, 1)}


def tiny_model(num_classes=15):
    torch.manual_seed(0)
    return AGCNN("densenet121", num_classes=num_classes, crop_size=32, backbone_kwargs=TINY)


def batch(n=6, num_classes=15):
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(n, 3, 64, 64, generator=g),
            "labels": (torch.rand(n, num_classes, generator=g) < 0.3).float()}


def bn_stats(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running_" in k or "num_batches" in k}


def params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_staged_plan_is_the_papers(make_config, tmp_path):
    plan = stage_plan(make_config(tmp_path))
    assert [(s.dirname, s.parts, s.monitor) for s in plan] == [
        ("stage1_global", ("global",), "global"), ("stage2_local", ("local",), "local"),
        ("stage3_fusion", ("fusion",), "fusion")]
    joint = stage_plan(make_config(tmp_path, "train.mode=joint"))
    assert len(joint) == 1 and joint[0].parts == ("global", "local", "fusion")
    assert joint[0].weights == {"global": 0.8, "local": 0.1, "fusion": 0.1}


@pytest.mark.parametrize("stage_index", [0, 1, 2])
def test_one_training_step_touches_only_the_stage_part(make_config, tmp_path, stage_index):
    """A real step of each stage (its loss, its optimizer with weight decay): frozen parts get no gradient, and
    neither their weights nor their BatchNorm statistics move; the trained part does change."""
    cfg = make_config(tmp_path, "optim.weight_decay=0.01")
    stage = stage_plan(cfg)[stage_index]
    model = tiny_model()
    model.set_trainable(stage.parts).train()
    parts = model.parts()
    before = {name: (params(m), bn_stats(m)) for name, m in parts.items()}
    optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad], stage.cfg)
    loss, logs = make_loss(stage)(model, batch())
    loss.backward()
    optimizer.step()
    assert set(logs) == {f"bce_{stage.monitor}"}
    for name, module in parts.items():
        grads = [p.grad for p in module.parameters()]
        weights, stats = before[name]
        if name in stage.parts:
            assert all(g is not None for g in grads)
            assert any(not torch.equal(weights[k], v) for k, v in module.named_parameters())
        else:
            assert all(g is None for g in grads), f"gradient reached frozen {name}"
            assert all(torch.equal(weights[k], v) for k, v in module.named_parameters())
            assert all(torch.equal(stats[k], v) for k, v in bn_stats(module).items()), f"{name} BN moved"
            assert not module.training
    if stage.parts == ("local",):  # BatchNorm of the trained branch does update
        assert any(not torch.equal(before["local"][1][k], v) for k, v in bn_stats(parts["local"]).items())


def test_fusion_loss_sends_no_gradient_into_backbones():
    model = tiny_model().set_trainable(["fusion"]).train()
    b = batch()
    out = model(b["image"])
    assert not out["local"].requires_grad and not out["global"].requires_grad
    F.binary_cross_entropy_with_logits(out["fusion"], b["labels"]).backward()
    assert model.fusion.weight.grad is not None
    assert all(p.grad is None for p in model.global_branch.parameters())
    assert all(p.grad is None for p in model.local_branch.parameters())


def test_joint_loss_is_the_weighted_sum_and_trains_everything(make_config, tmp_path):
    stage = stage_plan(make_config(tmp_path, "train.mode=joint"))[0]
    model = tiny_model().set_trainable(stage.parts).eval()  # eval: the forward below is repeatable
    b = batch()
    loss, logs = make_loss(stage)(model, b)
    out = model(b["image"])
    expect = sum(w * F.binary_cross_entropy_with_logits(out[h], b["labels"]) for h, w in stage.weights.items())
    torch.testing.assert_close(loss, expect)
    assert set(logs) == {"bce_global", "bce_local", "bce_fusion"}
    loss.backward()
    for name, module in model.parts().items():
        assert all(p.grad is not None for p in module.parameters()), name


def test_unknown_part_is_an_error():
    with pytest.raises(ValueError, match="unknown part"):
        tiny_model().set_trainable(["backbone"])
