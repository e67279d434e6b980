import math

import pytest
import torch
from helpers import tiny_model

from lmforge.config import TrainConfig
from lmforge.optim.build import build_optimizer, split_parameters
from lmforge.optim.hybrid import HybridOptimizer
from lmforge.optim.matrix import namo_scale
from lmforge.optim.orthogonalize import orthogonalize_all
from lmforge.ops.newton_schulz import newton_schulz5
from lmforge.train.schedule import lr_multiplier


def _train(model, opt, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randint(0, model.cfg.vocab_size, (2, 16), generator=g)
        loss = model(x, targets=x.roll(-1, 1))
        loss.backward()
        opt.step()
        opt.zero_grad()


def test_split_puts_each_parameter_once_in_its_place():
    model = tiny_model(100, tie_embeddings=False, attention_bias=True)
    split = split_parameters(model)
    ids = [id(p) for ps in split.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in split["embedding"]} == {"embed.weight", "head.weight"}
    assert all(names[id(p)].startswith("layers.") and p.dim() == 2 for p in split["matrix"])
    assert all(p.dim() == 1 for p in split["gain"])
    assert any(names[id(p)].endswith(".bias") for p in split["gain"])


@pytest.mark.parametrize("scale", ["original", "match_rms_adamw"])
def test_muon_matches_torch_muon(scale):
    torch.manual_seed(0)
    w0 = torch.randn(48, 32)
    ours_p, peer_p = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    hyper = dict(lr=0.02, weight_decay=0.1, momentum=0.95)
    ours = HybridOptimizer([{"params": [ours_p], "kind": "muon", "scale": scale, "ns_steps": 5, **hyper}])
    peer = torch.optim.Muon([peer_p], nesterov=True, adjust_lr_fn=scale, **hyper)
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        grad = torch.randn(48, 32, generator=g)
        ours_p.grad, peer_p.grad = grad.clone(), grad.clone()
        ours.step()
        peer.step()
    ours_update, peer_update = ours_p.data - w0, peer_p.data - w0
    # both orthogonalise in bf16, rounding differently: agreement to about 1% of the update, no closer
    assert float((ours_update - peer_update).norm() / peer_update.norm()) < 0.02
    assert float(peer_update.norm()) > 0.1


@pytest.mark.parametrize("scale", ["original", "match_rms_adamw"])
def test_muon_with_weight_decay_follows_the_reference(scale):
    """Muon (Jordan et al. 2024) in float64: Nesterov momentum, orthogonalised, decoupled weight decay at lr."""
    torch.manual_seed(0)
    w0 = torch.randn(20, 12, dtype=torch.float64)
    grads = [torch.randn(20, 12, dtype=torch.float64) for _ in range(3)]
    lr, wd, beta = 0.02, 0.5, 0.9
    p = torch.nn.Parameter(w0.clone())
    opt = HybridOptimizer([{"params": [p], "kind": "muon", "scale": scale, "ns_steps": 5, "lr": lr,
                            "weight_decay": wd, "momentum": beta}])
    for g in grads:
        p.grad = g.clone()
        opt.step()
    step = lr * (math.sqrt(20 / 12) if scale == "original" else 0.2 * math.sqrt(20))
    w, m = w0, torch.zeros_like(w0)
    for g in grads:
        m = beta * m + (1 - beta) * g
        w = w * (1 - lr * wd) - step * newton_schulz5((1 - beta) * g + beta * m, compute_dtype=None)
    torch.testing.assert_close(p.data, w, rtol=0, atol=1e-6)


def _namo_reference(w, grads, lr, mu1, mu2, eps, wd, clamp=None):
    """NAMO / NAMO-D (Zhang, Liu, Schaeffer, arXiv 2602.17080) written out in float64 for one matrix:
    Nesterov momentum, a second moment of the whole gradient (NAMO) or of each column (NAMO-D, clamped
    around the mean by c), steps scaled to AdamW's RMS (0.2 sqrt(max(rows, cols))) and decoupled weight
    decay at the adaptive step, both capped at 1."""
    rows, cols = w.shape
    m = torch.zeros_like(w)
    v = torch.zeros(cols if clamp else (), dtype=torch.float64)
    for t, g in enumerate(grads, 1):
        m = mu1 * m + (1 - mu1) * g
        v = mu2 * v + (1 - mu2) * ((g * g).sum(0) if clamp else (g * g).sum())
        nesterov = (1 - mu1) * g + mu1 * m
        d = (nesterov.norm(dim=0) if clamp else nesterov.norm()) / (v.sqrt() + eps)
        if clamp:
            d = d.clamp(clamp * d.mean(), d.mean() / clamp)
        step = lr * math.sqrt(1 - mu2**t) / (1 - mu1**t) * d
        o = newton_schulz5(nesterov, compute_dtype=None)
        w = w * (1 - wd * step.clamp(max=1.0)) - (step * 0.2 * math.sqrt(max(rows, cols))).clamp(max=1.0) * o
    return w


@pytest.mark.parametrize("kind", ["namo", "namo_d"])
def test_namo_with_weight_decay_follows_the_reference(kind):
    torch.manual_seed(0)
    w0 = torch.randn(12, 20, dtype=torch.float64)
    grads = [torch.randn(12, 20, dtype=torch.float64) * torch.logspace(-1, 1, 20, dtype=torch.float64) for _ in range(3)]
    hyper = dict(lr=0.02, momentum=0.9, beta2=0.99, eps=1e-8, weight_decay=0.5)
    p = torch.nn.Parameter(w0.clone())
    opt = HybridOptimizer([{"params": [p], "kind": kind, "clamp": 0.5, "ns_steps": 5, **hyper}])
    opt.step()  # no gradient yet: nothing happens
    for g in grads:
        p.grad = g.clone()
        opt.step()
    expected = _namo_reference(w0, grads, hyper["lr"], hyper["momentum"], hyper["beta2"], hyper["eps"],
                               hyper["weight_decay"], 0.5 if kind == "namo_d" else None)
    torch.testing.assert_close(p.data, expected, rtol=0, atol=1e-6)


def test_namo_d_with_c_1_scales_every_column_alike():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(16, 8))
    grad = torch.randn(16, 8) * torch.logspace(-2, 1, 8)  # columns of very different scales
    opt = HybridOptimizer([{"params": [p], "kind": "namo_d", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.95,
                            "beta2": 0.99, "eps": 1e-8, "clamp": 1.0, "ns_steps": 5}])
    p.grad = grad
    opt.step()
    nesterov = grad.lerp(torch.zeros_like(grad).lerp_(grad, 0.05), 0.95)  # M~ after one step, as the optimizer forms it
    direction = orthogonalize_all([nesterov], 5)[0]
    ratio = p.data / -direction
    torch.testing.assert_close(ratio, ratio[0, 0].expand_as(ratio), rtol=1e-5, atol=0)


def test_namo_d_clamp_bounds_the_column_scales():
    # column norms 0.01, 1, 1, 100 with unit second moments: d = norms, mean(d) = 25.5025
    nesterov = torch.zeros(3, 4)
    nesterov[0] = torch.tensor([0.01, 1.0, 1.0, 100.0])
    state = {"step": 1, "second_moment": torch.ones(4)}
    lr, mu1, mu2, c = 1e-4, 0.9, 0.99, 0.5
    scale, decay = namo_scale(nesterov, state, lr, mu1, mu2, eps=0.0, clamp=c)
    mean = (0.01 + 1 + 1 + 100) / 4
    d = torch.tensor([c * mean, c * mean, c * mean, mean / c])  # the three small columns clamp up, the big one down
    correction = lr * math.sqrt(1 - mu2) / (1 - mu1)
    torch.testing.assert_close(decay, correction * d)
    torch.testing.assert_close(scale, correction * d * 0.2 * math.sqrt(4))


@pytest.mark.parametrize("name", ["adamw", "muon", "namo", "namo_d"])
def test_resume_after_k_steps_equals_uninterrupted(name):
    cfg = TrainConfig(optimizer=name, lr=3e-3)
    full = tiny_model(64)
    opt = build_optimizer(full, cfg)
    _train(full, opt, 6)

    part = tiny_model(64)
    opt_a = build_optimizer(part, cfg)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 64, (2, 16), generator=g) for _ in range(6)]
    for x in batches[:3]:
        part(x, targets=x.roll(-1, 1)).backward()
        opt_a.step()
        opt_a.zero_grad()
    saved_model = {k: v.clone() for k, v in part.state_dict().items()}
    saved_opt = opt_a.state_dict()
    resumed = tiny_model(64)
    resumed.load_state_dict(saved_model)
    opt_b = build_optimizer(resumed, cfg)
    opt_b.load_state_dict(saved_opt)
    for x in batches[3:]:
        resumed(x, targets=x.roll(-1, 1)).backward()
        opt_b.step()
        opt_b.zero_grad()
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_schedule_scales_every_group_by_the_same_ratio_each_step():
    cfg = TrainConfig(optimizer="muon", lr=1e-3, matrix_lr=2e-2, steps=10, warmup_steps=2, decay_fraction=0.3)
    opt = build_optimizer(tiny_model(64), cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, cfg))
    # warmup over 2 steps, constant, then a linear decay to 0 over the last 3 of 10 steps
    multipliers = [0.5, 1, 1, 1, 1, 1, 1, 2 / 3, 1 / 3, 0]
    for step, multiplier in enumerate(multipliers):
        assert sched.get_last_lr() == pytest.approx([2e-2 * multiplier, 1e-3 * multiplier, 1e-3 * multiplier], rel=1e-12, abs=0), step
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
        opt.step()
        sched.step()
