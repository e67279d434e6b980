import math

import pytest
import torch
from helpers import tiny_model

from lmforge.config import TrainConfig
from lmforge.optim.build import build_optimizer, split_parameters
from lmforge.optim.hybrid import HybridOptimizer
from lmforge.optim.matrix import namo_scale
from lmforge.optim.orthogonalize import orthogonalize_all


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
    assert {names[id(p)] for p in split["decay"]} == {"embed.weight", "head.weight"}
    assert all(names[id(p)].startswith("layers.") and p.dim() == 2 for p in split["matrix"])
    assert all(p.dim() == 1 for p in split["no_decay"])
    assert any(names[id(p)].endswith(".bias") for p in split["no_decay"])


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
    torch.testing.assert_close(ours_p.data, peer_p.data, rtol=2e-3, atol=2e-4)
    assert not torch.allclose(ours_p.data, w0)


def _namo_step_by_hand(grads, lr, mu1, mu2, eps, wd, w):
    """NAMO's formulas written out for one matrix, step by step (float64)."""
    m = torch.zeros_like(w)
    v = 0.0
    rows, cols = w.shape
    for t, g in enumerate(grads, 1):
        m = mu1 * m + (1 - mu1) * g
        v = mu2 * v + (1 - mu2) * float((g * g).sum())
        nesterov = (1 - mu1) * g + mu1 * m
        step = lr * math.sqrt(1 - mu2**t) / (1 - mu1**t) * float(nesterov.norm()) / (math.sqrt(v) + eps)
        from lmforge.ops.newton_schulz import newton_schulz5

        o = newton_schulz5(nesterov, compute_dtype=None)
        w = w * (1 - wd * min(step, 1.0)) - min(step * 0.2 * math.sqrt(max(rows, cols)), 1.0) * o
    return w


def test_namo_two_steps_follow_the_formula():
    torch.manual_seed(0)
    w0 = torch.randn(12, 20, dtype=torch.float64)
    grads = [torch.randn(12, 20, dtype=torch.float64) for _ in range(2)]
    p = torch.nn.Parameter(w0.clone())
    hyper = dict(lr=0.01, weight_decay=0.1, momentum=0.95, beta2=0.99, eps=1e-8, ns_steps=5)
    opt = HybridOptimizer([{"params": [p], "kind": "namo", **hyper}])
    opt.step()  # no gradient yet: nothing happens
    for g in grads:
        p.grad = g.clone()
        with torch.device("cpu"):
            opt.step()
    expected = _namo_step_by_hand(grads, 0.01, 0.95, 0.99, 1e-8, 0.1, w0)
    torch.testing.assert_close(p.data, expected, rtol=1e-2, atol=1e-3)  # bf16 Newton-Schulz in the optimizer


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


def test_schedules_scale_both_parts_by_the_same_ratio():
    model = tiny_model(64)
    opt = build_optimizer(model, TrainConfig(optimizer="muon", lr=1e-3, matrix_lr=2e-2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    assert sorted(g["lr"] for g in opt.param_groups) == [5e-4, 5e-4, 1e-2]
    assert sched.get_last_lr()
