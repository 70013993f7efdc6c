"""shared.engine: checkpoints, weights loading, EMA, schedules, sampler, and the Trainer loop (in-process, CPU)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from shared.engine import (CheckpointError, EngineConfig, ModelEMA, NonFiniteLossError, ResumableSampler, Trainer,
                           WeightsMismatchError, cosine_schedule, create_run_dir, load_checkpoint, load_model_weights,
                           make_loader, move_to_device, save_checkpoint, seed_everything, select_device,
                           step_schedule)

SCRIPT = Path(__file__).parent / "engine_scripts" / "train_tiny.py"


pytestmark = pytest.mark.usefixtures("restore_torch_flags")


def _tiny_script():
    spec = importlib.util.spec_from_file_location("engine_train_tiny", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _linear_data(n=32, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = x @ torch.randn(dim, 1, generator=g)
    return TensorDataset(x, y)


def _mse(model, batch):
    x, y = batch
    loss = nn.functional.mse_loss(model(x), y)
    return loss, {"mse": loss.item()}


def _trainer(tmp_path, model=None, lr=0.05, loss_fn=_mse, evaluate=None, name="run", **cfg):
    cfg.setdefault("device", "cpu")
    cfg.setdefault("num_workers", 0)
    cfg.setdefault("log_every", 1)
    seed_everything(0)
    model = model or nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return Trainer(model, opt, EngineConfig(**cfg), tmp_path / name, loss_fn=loss_fn, evaluate=evaluate)


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# --------------------------------------------------------------------------------------------- checkpoints
def test_save_checkpoint_is_atomic_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "c" / "last.pt"
    save_checkpoint({"a": torch.ones(2)}, path)

    def broken_save(obj, fh, *a, **k):
        fh.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*last\.pt \(OSError: disk full"):
        save_checkpoint({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]   # no temp file left behind
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))         # old content intact


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)
    pickled = tmp_path / "pickled.pt"
    torch.save({"obj": types.SimpleNamespace(a=1)}, pickled)   # an arbitrary object: refused by weights_only
    with pytest.raises(CheckpointError, match="pickled.pt"):
        load_checkpoint(pickled)


def test_load_model_weights_lists_missing_unexpected_and_shapes():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    sd = {"module." + k: v.clone() for k, v in model.state_dict().items()}   # DDP-style prefix is stripped
    load_model_weights(model, sd)
    bad = dict(sd)
    bad.pop("module.2.bias")
    bad["module.extra.weight"] = torch.zeros(1)
    bad["module.0.weight"] = torch.zeros(5, 3)
    with pytest.raises(WeightsMismatchError) as info:
        load_model_weights(model, bad)
    msg = str(info.value)
    assert "missing keys" in msg and "2.bias" in msg
    assert "unexpected keys" in msg and "extra.weight" in msg
    assert "shape mismatches" in msg and "0.weight" in msg and "(5, 3)" in msg
    res = load_model_weights(model, bad, strict=False)
    assert res.missing == ["2.bias"] and res.unexpected == ["extra.weight"] and res.mismatched[0][0] == "0.weight"
    # key_map renames prefixes
    renamed = {k.replace("module.0.", "first."): v for k, v in sd.items()}
    load_model_weights(model, renamed, key_map={"first.": "0."})


# ---------------------------------------------------------------------------------------------- EMA / LR
def test_ema_math():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    for k, v in ema.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, 0.9 * before[k] + 0.1 * model.state_dict()[k])
        else:
            assert int(v) == 7
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_schedules():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = cosine_schedule(opt, total_steps=10, min_lr=0.1, warmup_steps=2)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert lrs[10] == pytest.approx(0.1) and lrs[11] == pytest.approx(0.1)
    opt2 = torch.optim.SGD([p], lr=1.0)
    s2 = step_schedule(opt2, 2, gamma=0.1)
    got = []
    for _ in range(5):
        got.append(opt2.param_groups[0]["lr"])
        opt2.step()
        s2.step()
    assert got == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    opt3 = torch.optim.SGD([p], lr=1.0)
    s3 = step_schedule(opt3, [1, 3], gamma=0.5)
    got = []
    for _ in range(4):
        got.append(opt3.param_groups[0]["lr"])
        opt3.step()
        s3.step()
    assert got == pytest.approx([1, 0.5, 0.5, 0.25])


# ------------------------------------------------------------------------------------------------ sampler
def test_sampler_shards_skips_and_repeats():
    single = ResumableSampler(10, shuffle=True, seed=5, rank=0, world_size=1)
    single.set_epoch(3)
    order = list(single)
    assert sorted(order) == list(range(10))
    single.set_epoch(4)
    assert list(single) != order                                     # new order each epoch
    shards = [ResumableSampler(10, seed=5, rank=r, world_size=2) for r in range(2)]
    for s in shards:
        s.set_epoch(3)
    r0, r1 = list(shards[0]), list(shards[1])
    assert r0 == order[0::2] and r1 == order[1::2]
    shards[0].set_epoch(3, skip=2)
    assert list(shards[0]) == order[0::2][2:]
    assert list(shards[0]) == order[0::2]                             # the skip applies once
    # per-sample seeds depend on the global position only: same for 1 rank and 2 ranks
    s1 = ResumableSampler(10, seed=5, world_size=1, rank=0, yield_seeds=True)
    s2 = ResumableSampler(10, seed=5, world_size=2, rank=1, yield_seeds=True)
    assert list(s2) == list(s1)[1::2]
    # repeated augmentation: consecutive copies go to different ranks, ~n samples per epoch in total
    reps = [ResumableSampler(12, seed=1, rank=r, world_size=3, repeats=3, repeat_round=0) for r in range(3)]
    lists = [list(s) for s in reps]
    assert all(len(x) == 4 for x in lists)
    for j in range(4):
        assert lists[0][j] == lists[1][j] == lists[2][j]
    assert len(ResumableSampler(7, world_size=2, rank=1, pad=False)) == 3


@pytest.mark.parametrize("n,world", [(7, 2), (10, 4), (2, 3), (0, 2)])
def test_evaluation_shards_are_the_dataset_once_in_order(n, world):
    """pad=False (make_loader(train=False)): contiguous shards, no duplicates, rank order = dataset order (what
    all_gather_concat puts together), sizes differing by at most one."""
    shards = [ResumableSampler(n, shuffle=False, world_size=world, rank=r, pad=False) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert [len(s) for s in shards] == [len(list(s)) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_evaluation_split_smaller_than_the_world_is_one_clear_error(monkeypatch):
    """A rank with no evaluation sample would leave the others waiting in the gather: refused up front."""
    import shared.engine.data as engine_data
    monkeypatch.setattr(engine_data, "get_world_size", lambda: 4)
    with pytest.raises(ValueError, match="3 samples cannot be shared by 4 processes"):
        engine_data.make_loader(TensorDataset(torch.zeros(3, 1)), 2, train=False, num_workers=0)
    assert len(engine_data.make_loader(TensorDataset(torch.zeros(5, 1)), 2, train=False, num_workers=0,
                                       sampler=[0, 1])) == 1   # a custom sampler is the caller's business


def test_make_loader_augmentation_independent_of_workers():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            return torch.rand(3) + i

    a = [b for b in make_loader(Noisy(), 4, num_workers=0, seed=1)]
    b = [b for b in make_loader(Noisy(), 4, num_workers=2, seed=1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    state = torch.get_rng_state()
    list(make_loader(Noisy(), 4, num_workers=0, seed=1))
    assert torch.equal(state, torch.get_rng_state())                  # loading leaves the global RNG alone


def test_move_to_device_and_select_device():
    batch = {"x": torch.ones(1), "meta": ["a"], "pair": (torch.zeros(1), 3)}
    out = move_to_device(batch, torch.device("cpu"))
    assert out["meta"] == ["a"] and out["pair"][1] == 3 and isinstance(out["pair"], tuple)
    assert select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert select_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="CUDA"):
            select_device("cuda")


def test_create_run_dir(tmp_path):
    a = create_run_dir("adnet", "nih_convnext", root=tmp_path)
    b = create_run_dir("adnet", "nih_convnext", root=tmp_path)
    assert a != b and a.parent == b.parent == tmp_path / "adnet" / "nih_convnext"
    assert (a / "checkpoints").is_dir()
    assert create_run_dir("adnet", "x", root=tmp_path, resume=a) == a
    with pytest.raises(FileNotFoundError):
        create_run_dir("adnet", "x", root=tmp_path, resume=tmp_path / "missing")


# ------------------------------------------------------------------------------------------------ Trainer
def test_determinism_same_seed_same_weights(tmp_path):
    tiny = _tiny_script()
    tiny.main([str(tmp_path / "a"), "--epochs", "2"])
    tiny.main([str(tmp_path / "b"), "--epochs", "2"])
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["global_step"] == 16
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(_jsonl(tmp_path / "a" / "metrics.jsonl")) == strip(_jsonl(tmp_path / "b" / "metrics.jsonl"))


def test_grad_accumulation_matches_big_batch(tmp_path):
    data = _linear_data(32)
    results = []
    for name, batch, accum in (("big", 8, 1), ("accum", 4, 2)):
        tr = _trainer(tmp_path, name=name, epochs=2, grad_accum=accum)
        tr.fit(tr.make_loader(data, batch, shuffle=True))
        assert tr.global_step == 8
        results.append(tr.model.state_dict())
    for k in results[0]:
        assert torch.allclose(results[0][k], results[1][k], atol=1e-6), k


def test_grad_accumulation_short_last_group(tmp_path):
    tr = _trainer(tmp_path, epochs=1, grad_accum=2)
    tr.fit(tr.make_loader(_linear_data(20), 4))            # 5 batches -> groups of 2, 2, 1
    assert tr.global_step == 3


def test_loader_without_len_steps_the_short_last_group_with_its_mean_gradient(tmp_path):
    """5 batches, accumulation 4, no len(): the short last group (1 batch) gets a full-weight mean gradient."""
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([torch.ones(1)] * 5)

    weight = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(weight.weight)
    tr = _trainer(tmp_path, model=weight, lr=1.0, epochs=1, grad_accum=4,
                  loss_fn=lambda m, b: (m(b).sum(), {}))
    tr.fit(torch.utils.data.DataLoader(Stream(), batch_size=1))
    assert tr.global_step == 2
    assert float(weight.weight.detach()) == pytest.approx(-2.0)      # two SGD steps on a mean gradient of 1.0 each


class _InfGrad(torch.autograd.Function):
    """Identity forward, infinite gradient backward: a finite loss whose gradients are not."""
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_non_finite_gradients_stop_before_reaching_the_weights(tmp_path):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        x, y = batch
        out = model(x)
        if calls["n"] == 4:
            out = _InfGrad.apply(out)
        return nn.functional.mse_loss(out, y), {}

    tr = _trainer(tmp_path, epochs=2, ckpt_every_iters=1, loss_fn=loss_fn)
    _assert_stops_with_last_good_checkpoint(tr, "non-finite gradient norm", last_step=3)
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


def test_skipped_fp16_steps_move_neither_schedule_nor_ema(tmp_path):
    tr = _trainer(tmp_path, lr=1.0, epochs=1, ema_decay=0.5,
                  loss_fn=lambda m, b: (m(b[0]).mean() * 1e38, {}))    # scaled gradients overflow: every step skips
    tr.scaler = torch.amp.GradScaler("cpu", init_scale=1e4)
    tr.scheduler = cosine_schedule(tr.optimizer, total_steps=4, warmup_steps=0)
    weights = [p.detach().clone() for p in tr.model.parameters()]
    ema_before = {k: v.clone() for k, v in tr.ema.module.state_dict().items()}
    tr.fit(tr.make_loader(_linear_data(16), 4, shuffle=False))
    assert tr.global_step == 4 and tr.scaler.get_scale() < 1e4
    assert all(torch.equal(a, b) for a, b in zip(weights, tr.model.parameters()))
    assert tr.optimizer.param_groups[0]["lr"] == 1.0               # the cosine did not advance
    assert all(torch.equal(v, tr.ema.module.state_dict()[k]) for k, v in ema_before.items())


def test_best_checkpoint_follows_monitor(tmp_path):
    for mode, best_step in (("min", 4), ("max", 5)):
        values = iter([3.0, 1.0, 2.0, 0.5, 4.0, 1.5])
        tr = _trainer(tmp_path, name=mode, epochs=1, val_every_iters=1, monitor="val/score", monitor_mode=mode,
                      evaluate=lambda m: {"val/score": next(values)})
        best = tr.fit(tr.make_loader(_linear_data(24), 4))
        ckpt = torch.load(tr.best_path, weights_only=True)
        assert ckpt["global_step"] == best_step and best["step"] == best_step
        assert best["val/score"] == ckpt["best_metric"]
        rows = [r for r in _jsonl(tr.run_dir / "metrics.jsonl") if r["split"] == "val"]
        assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
        model = tr.best_model()
        for k, v in model.state_dict().items():
            assert torch.equal(v, ckpt["model"][k])


def test_monitor_missing_is_a_clear_error(tmp_path):
    tr = _trainer(tmp_path, epochs=1, monitor="val/auroc", evaluate=lambda m: {"val/loss": 1.0})
    with pytest.raises(KeyError, match="val/auroc.*val/loss"):
        tr.fit(tr.make_loader(_linear_data(8), 4))


def test_early_stopping(tmp_path):
    tr = _trainer(tmp_path, epochs=10, early_stop_patience=2, evaluate=lambda m: {"val/loss": 1.0})
    tr.fit(tr.make_loader(_linear_data(8), 4))
    assert tr.epoch == 3 and tr.stopped
    # re-running fit on the finished run does nothing more
    tr2 = _trainer(tmp_path, epochs=10, early_stop_patience=2, evaluate=lambda m: {"val/loss": 1.0})
    tr2.fit(tr2.make_loader(_linear_data(8), 4))
    assert tr2.epoch == 3 and tr2.global_step == tr.global_step


def _assert_stops_with_last_good_checkpoint(tr, what: str, last_step: int) -> None:
    with pytest.raises(NonFiniteLossError, match=f"{what}.*last.pt"):
        tr.fit(tr.make_loader(_linear_data(32), 4))
    ckpt = torch.load(tr.last_path, weights_only=True)
    assert ckpt["global_step"] == last_step
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert f"ERROR: {what}" in (tr.run_dir / "log.txt").read_text()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss, logs = _mse(model, batch)
        return (loss * float("nan") if calls["n"] == 6 else loss), logs

    tr = _trainer(tmp_path, epochs=3, ckpt_every_iters=2, loss_fn=loss_fn)
    _assert_stops_with_last_good_checkpoint(tr, "non-finite loss", last_step=4)


def test_max_iters_ema_bf16_plateau_and_weights_only(tmp_path):
    """Every checkpoint the engine writes loads with weights_only=True (EMA, plateau scheduler, config)."""
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    cfg = EngineConfig(epochs=5, max_iters=5, ema_decay=0.5, amp="bf16", device="cpu", num_workers=0,
                       val_every_iters=2, ckpt_every_iters=1, clip_grad_norm=1.0)
    ev = lambda m: {"val/loss": float(m(torch.ones(4, 4)).float().pow(2).mean())}  # noqa: E731
    tr = Trainer(model, opt, cfg, tmp_path / "r", loss_fn=_mse, evaluate=ev, scheduler=sched,
                 scheduler_interval="plateau", config=cfg)
    tr.fit(tr.make_loader(_linear_data(32), 4))
    assert tr.global_step == 5 and not tr.stopped
    for name in ("last.pt", "best.pt"):
        ck = torch.load(tr.ckpt_dir / name, weights_only=True)
        assert ck["ema"] is not None and ck["config"]["ema_decay"] == 0.5
        assert set(ck["rng"]) >= {"torch", "numpy", "python"}
    val = [r for r in _jsonl(tr.run_dir / "metrics.jsonl") if r["split"] == "val"]
    assert [r["step"] for r in val] == [2, 4, 5]                       # final validation at the stop point
    assert {"val/loss", "ema/val/loss", "raw/val/loss"} <= set(val[0])
    assert val[0]["val/loss"] == val[0]["ema/val/loss"]
    assert (tr.run_dir / "config.yaml").exists()
    # best_model() loads the EMA weights
    best = torch.load(tr.best_path, weights_only=True)
    m = tr.best_model()
    for k, v in m.state_dict().items():
        assert torch.equal(v, best["ema"][k])


def test_no_evaluate_writes_best_as_final(tmp_path):
    tr = _trainer(tmp_path, epochs=1)
    assert tr.fit(tr.make_loader(_linear_data(8), 4)) == {}
    assert torch.load(tr.best_path, weights_only=True)["global_step"] == 2


def test_fp16_on_cpu_falls_back(tmp_path):
    with pytest.warns(UserWarning, match="fp16"):
        tr = _trainer(tmp_path, amp="fp16")
    assert tr.amp == "none" and tr.scaler is None


def test_optional_sinks_never_block(tmp_path, monkeypatch):
    class FakeVisdom:
        def __init__(self, **kw):
            pass

        def check_connection(self, timeout_seconds=0):
            return False

    monkeypatch.setitem(sys.modules, "visdom", types.SimpleNamespace(Visdom=FakeVisdom))
    with pytest.warns(UserWarning, match="visdom"):
        tr = _trainer(tmp_path, name="v", visdom=True, tensorboard=True)
    assert tr.logger.vis is None
    tr.fit(tr.make_loader(_linear_data(8), 4))
    if tr.logger.tb is not None or importlib.util.find_spec("tensorboard") is not None:
        assert (tr.run_dir / "tensorboard").is_dir()
    monkeypatch.setitem(sys.modules, "visdom", None)                   # not installed
    with pytest.warns(UserWarning, match="visdom"):
        _trainer(tmp_path, name="v2", visdom=True)


def test_engine_config_validation():
    with pytest.raises(ValueError, match="grad_accum"):
        EngineConfig(grad_accum=0)
    from shared.config import from_dict
    cfg = from_dict(EngineConfig, {"amp": "bf16", "epochs": 3})
    assert cfg.amp == "bf16" and cfg.epochs == 3


def test_trainable_filter_on_epoch_start_and_subset_datasets(tmp_path):
    seen = []
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    frozen = model[0].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tr = Trainer(model, opt, EngineConfig(epochs=2, device="cpu", num_workers=0), tmp_path / "r", loss_fn=_mse,
                 trainable_filter=lambda name, p: not name.startswith("0."),
                 on_epoch_start=lambda t: seen.append(t.epoch))
    subset = torch.utils.data.Subset(_linear_data(16), list(range(12)))   # has __getitems__: must still work
    tr.fit(tr.make_loader(subset, 4, num_workers=2))
    assert seen == [0, 1] and tr.global_step == 6
    assert torch.equal(model[0].weight, frozen) and not model[0].weight.requires_grad


@pytest.mark.parametrize("values, best_step, source", [
    ([1, 3, 5, 2, 4, 4.5], 2, "ema"),      # (ema, raw) per validation: raw wins 1st, ema 2nd, nothing 3rd
    ([1, 3, 2, 6, 4, 4.5], 2, "raw"),
])
def test_ema_select_best_keeps_the_better_of_raw_and_ema(tmp_path, values, best_step, source):
    it = iter(values)
    tr = _trainer(tmp_path, epochs=1, ema_decay=0.5, ema_select="best", val_every_iters=1, monitor="val/score",
                  monitor_mode="max", evaluate=lambda m: {"val/score": float(next(it))})
    best = tr.fit(tr.make_loader(_linear_data(12), 4))
    ck = torch.load(tr.best_path, weights_only=True)
    assert ck["global_step"] == best_step and ck["best_source"] == source
    assert best["val/score"] == max(values[2], values[3]) and best["selected_ema"] == float(source == "ema")
    val = [r for r in _jsonl(tr.run_dir / "metrics.jsonl") if r["split"] == "val"]
    assert [r["val/score"] for r in val] == [3, max(values[2:4]), 4.5]
    model = tr.best_model()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ck["ema" if source == "ema" else "model"][k])


def test_resume_latest_and_mismatch_warnings(tmp_path):
    root = tmp_path / "runs"
    with pytest.raises(FileNotFoundError, match="latest"):
        create_run_dir("m", "c", root=root, resume="latest")
    run = create_run_dir("m", "c", root=root)
    create_run_dir("m", "c", root=root)                                    # newer, but no last.pt
    tr = Trainer(nn.Linear(4, 1), None, EngineConfig(epochs=1, device="cpu", num_workers=0), run, loss_fn=_mse,
                 config={"lr": 0.1})
    tr.optimizer = torch.optim.SGD(tr.model.parameters(), lr=0.1)
    tr.fit(tr.make_loader(_linear_data(8), 4))
    assert create_run_dir("m", "c", root=root, resume="latest") == run
    tr2 = Trainer(nn.Linear(4, 1), None, EngineConfig(epochs=2, device="cpu", num_workers=0), run, loss_fn=_mse,
                  config={"lr": 0.2})
    tr2.optimizer = torch.optim.SGD(tr2.model.parameters(), lr=0.1)
    with pytest.warns(UserWarning) as record:
        tr2.fit(tr2.make_loader(_linear_data(8), 2))
    text = " ".join(str(w.message) for w in record)
    assert "lr: 0.1 -> 0.2" in text and "batch_size" in text
    assert tr2.epoch == 2


def test_schedule_length_counts_the_short_last_group(tmp_path):
    tr = _trainer(tmp_path, epochs=3, grad_accum=2)
    loader = tr.make_loader(_linear_data(20), 4)            # 5 batches -> 3 optimizer steps per epoch
    assert tr.steps_per_epoch(loader) == 3 and tr.total_steps(loader) == 9
    tr.fit(loader)
    assert tr.global_step == tr.total_steps(loader)
    capped = _trainer(tmp_path, name="capped", epochs=3, grad_accum=2, max_iters=4)
    assert capped.total_steps(loader) == 4
