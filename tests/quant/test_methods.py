"""GPTQ, AWQ and HQQ each beat round-to-nearest on what they optimise; AWQ's folding is exact."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import ModelConfig
from lmforge.model.transformer import Transformer
from lmforge.quant.awq import (MAX_SHRINK, N_GRID, awq_block, fold_scales, input_grams, linear_output_loss,
                               llama_scale_groups, module_output_loss, quadratic_errors, search_clip, search_scales)
from lmforge.quant.gptq import Hessian, gptq, inverse_cholesky
from lmforge.quant.grid import Grid, dequantize, fake_quantize, grid_params, rtn
from lmforge.quant.hqq import hqq, shrink_lp


def correlated_inputs(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Activations with a few loud channels and correlated directions, like a real layer's inputs."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5
    x = torch.randn(n, k, generator=g) @ mix
    x[:, :4] *= 20
    return x


def output_error(w, w_hat, x):
    return float(((x @ (w - w_hat).t()) ** 2).mean())


@pytest.mark.parametrize("grid", [Grid(4, 32), Grid(4, 128), Grid(8, None, True), Grid(4, 64)])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_the_layer_output(grid, act_order):
    torch.manual_seed(0)
    w = torch.randn(64, 192) * 0.05
    x = correlated_inputs(2048, 192)
    h = Hessian(192)
    for chunk in x.split(500):  # accumulated batch by batch
        h.add(chunk)
    exact = 2 * x.double().t() @ x.double() / len(x)
    assert float((h.h - exact).abs().max() / exact.abs().max()) < 1e-6  # float32 products, float64 sum
    codes, scales, zeros = gptq(w, h.h, grid, act_order=act_order)
    w_gptq = dequantize(codes, scales, zeros, grid)
    w_rtn = dequantize(*rtn(w, grid), grid)
    assert output_error(w, w_gptq, x) < 0.7 * output_error(w, w_rtn, x)


def gptq_reference(w, h, grid, damp=0.01, act_order=False):
    """GPTQ column by column in float64 with the explicit inverse Hessian (the paper's eq. 2-3, no blocks,
    no Cholesky): quantize column q, spread its error over the columns left by H^-1[q, F] / H^-1[q, q],
    then remove q from H^-1 by one step of Gaussian elimination."""
    n, k = w.shape
    group = grid.group_len(k)
    w = w.double().clone()
    h = h.double().clone()
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(k)
    static = act_order or grid.group_size is None
    scales, zeros = grid_params(w, grid) if static else (torch.zeros(n, grid.n_groups(k)), torch.zeros(n, grid.n_groups(k)))
    w, h = w[:, perm], h[perm][:, perm]
    h += damp * torch.diag(h).mean() * torch.eye(k, dtype=torch.float64)
    hinv = torch.linalg.inv(h)
    codes = torch.zeros(n, k, dtype=torch.uint8)
    for q in range(k):
        g = int(perm[q]) // group
        if not static and q % group == 0:
            scales[:, g:g + 1], zeros[:, g:g + 1] = grid_params(w[:, q:q + group], Grid(grid.bits, None, grid.symmetric))
        s, z = scales[:, g].double(), zeros[:, g].double()
        codes[:, q] = torch.clamp(torch.round(w[:, q].float() / s + z), 0, grid.max_code).to(torch.uint8)
        err = (w[:, q] - (codes[:, q].double() - z) * s) / hinv[q, q]
        w[:, q:] -= err[:, None] * hinv[q, q:][None, :]
        hinv = hinv - hinv[:, q:q + 1] @ hinv[q:q + 1, :] / hinv[q, q]
    return codes[:, torch.argsort(perm)], scales, zeros


@pytest.mark.parametrize("grid", [Grid(4, 16), Grid(8, None, True), Grid(4, 24)])
@pytest.mark.parametrize("act_order", [False, True])
def test_blocked_gptq_equals_the_column_by_column_reference(grid, act_order):
    torch.manual_seed(1)
    w = torch.randn(12, 76) * 0.05
    x = correlated_inputs(512, 76)
    h = 2 * x.double().t() @ x.double() / len(x)
    codes, scales, zeros = gptq(w, h, grid, act_order=act_order, block=32)  # several blocks, a ragged last group
    ref_codes, ref_scales, ref_zeros = gptq_reference(w, h, grid, act_order=act_order)
    assert torch.equal(scales, ref_scales.float()) and torch.equal(zeros, ref_zeros.float())
    assert torch.equal(codes, ref_codes)


def test_inverse_cholesky_is_the_upper_factor_of_the_inverse():
    x = correlated_inputs(512, 96).double()
    h = x.t() @ x / 512 + 0.01 * torch.eye(96, dtype=torch.float64)
    u = inverse_cholesky(h)
    assert torch.equal(u, u.triu()) and (torch.diag(u) > 0).all()
    torch.testing.assert_close(u, torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True),
                               rtol=1e-9, atol=1e-12)


def test_gptq_handles_dead_inputs():
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    x = correlated_inputs(256, 64)
    x[:, 5] = 0  # an input that never fires
    h = Hessian(64)
    h.add(x)
    codes, scales, zeros = gptq(w, h.h, Grid(4, 32))
    w_hat = dequantize(codes, scales, zeros, Grid(4, 32))
    assert torch.isfinite(w_hat).all() and (w_hat[:, 5] == 0).all()


def test_gptq_with_an_identity_hessian_is_rtn():
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    codes, scales, zeros = gptq(w, torch.eye(64), Grid(4, 32))
    ref_codes, ref_scales, ref_zeros = rtn(w, Grid(4, 32))
    assert torch.equal(codes, ref_codes) and torch.equal(scales, ref_scales) and torch.equal(zeros, ref_zeros)


def test_hqq_lowers_the_lp_error_of_heavy_tailed_weights():
    torch.manual_seed(0)
    w = torch.distributions.StudentT(3.0).sample((64, 256)) * 0.02
    grid = Grid(4, 64)
    w_hqq = dequantize(*hqq(w, grid), grid)
    w_rtn = dequantize(*rtn(w, grid), grid)
    lp = lambda e: float(e.abs().pow(0.7).mean())  # noqa: E731
    assert lp(w - w_hqq) < lp(w - w_rtn)
    assert float((w - w_hqq).abs().mean()) < float((w - w_rtn).abs().mean())


def test_shrink_lp_is_hqqs_generalised_soft_threshold():
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    beta, p = 2.0, 0.7
    out = shrink_lp(x, beta, p)
    assert (out.abs() <= x.abs()).all() and (torch.sign(out) * torch.sign(x) >= 0).all()
    threshold = x.abs() ** (p - 1) / beta
    assert (out[x.abs() <= threshold] == 0).all()  # small errors are treated as noise and dropped
    kept = x.abs() > threshold
    torch.testing.assert_close(out[kept], torch.sign(x[kept]) * (x[kept].abs() - threshold[kept]))


def tiny_block(seed=0, n_kv_heads=4):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=64, d_model=64, n_layers=1, n_heads=4, n_kv_heads=n_kv_heads,
                                    max_seq_len=64)).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.rand_like(p) + 0.5)
    return model.layers[0]


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_awq_folding_leaves_the_float_block_unchanged(n_kv_heads):
    block = tiny_block(n_kv_heads=n_kv_heads)
    x = torch.randn(2, 16, 64, dtype=torch.float64)
    positions = torch.arange(16).expand(2, -1)
    before = block(x, positions, None)
    modules = dict(block.named_modules())
    groups = llama_scale_groups(block, positions)
    assert (len(groups) == 4) == (n_kv_heads == 4)  # v -> o only without grouped KV heads
    for g in groups:
        fold_scales(g.prev, [modules[n] for n in g.linears], torch.rand(64 if "down" not in g.linears[0] else 192,
                                                                        dtype=torch.float64) + 0.5)
    torch.testing.assert_close(block(x, positions, None), before, rtol=1e-12, atol=1e-12)


def test_awq_linear_output_loss_equals_the_output_error_it_replaces():
    torch.manual_seed(0)
    lin = nn.Linear(96, 40, bias=False).double().requires_grad_(False)
    x = correlated_inputs(300, 96).double().reshape(3, 100, 96)
    w = lin.weight.detach().clone()
    grid = Grid(4, 32)
    direct, gram = module_output_loss(x, [lin], lin, bf16=False), linear_output_loss(x, w)
    for shrink in (1.0, 0.8):
        candidate = fake_quantize(w, grid, shrink)
        assert gram([candidate]) == pytest.approx(direct([candidate]), rel=1e-9)
    lin.weight.copy_(w)
    mean_abs = x.reshape(-1, 96).abs().mean(0)
    by_output = search_scales(x, [lin], lin, grid, mean_abs)
    assert torch.equal(lin.weight, w)  # the search leaves the weights as it found them
    torch.testing.assert_close(search_scales(x, [lin], None, grid, mean_abs), by_output, rtol=0, atol=0)


def test_awq_clip_search_never_hurts_the_output():
    torch.manual_seed(0)
    w = torch.distributions.StudentT(2.0).sample((32, 128)) * 0.02
    x = correlated_inputs(1024, 128)
    grid = Grid(4, 32)
    shrink = search_clip(w, x, grid)
    assert ((shrink > 0.5) & (shrink <= 1)).all() and (shrink < 1).any()
    clipped = fake_quantize(w, grid, shrink)
    assert output_error(w, clipped, x) < output_error(w, fake_quantize(w, grid), x)


def group_output_errors(x, w, candidate, group):
    """Naive reference: each input group's share of the output x W^T computed token by token, its squared
    change summed over the tokens, [N, G]."""
    pad = -w.shape[1] % group
    xg = F.pad(x, (0, pad)).reshape(x.shape[0], -1, group)
    e = F.pad(candidate - w, (0, pad)).reshape(w.shape[0], -1, group)
    return torch.einsum("tgi,ngi->tng", xg, e).pow(2).sum(0)


def test_awq_quadratic_errors_equal_the_group_outputs_change():
    torch.manual_seed(0)
    x, w = correlated_inputs(200, 80).double(), torch.randn(24, 80, dtype=torch.float64)
    candidate = fake_quantize(w, Grid(4, 32), 0.85)  # 80 columns: two groups of 32 and one padded
    for group in (32, 80):
        torch.testing.assert_close(quadratic_errors(candidate - w, input_grams(x, group)),
                                   group_output_errors(x, w, candidate, group), rtol=1e-10, atol=0)


def test_awq_clip_search_picks_what_the_token_by_token_search_picks():
    torch.manual_seed(1)
    w = (torch.distributions.StudentT(2.0).sample((32, 96)) * 0.02).double()
    x = correlated_inputs(512, 96).double()
    grid = Grid(4, 32)
    shrinks = [1 - step / N_GRID for step in range(int(MAX_SHRINK * N_GRID))]
    errors = torch.stack([group_output_errors(x, w, fake_quantize(w, grid, s), 32) for s in shrinks])
    expected = torch.tensor(shrinks, dtype=torch.float32)[errors.argmin(0)]
    torch.testing.assert_close(search_clip(w, x, grid), expected, rtol=0, atol=0)


def test_awq_block_beats_rtn_on_the_block_output():
    block = tiny_block().float()
    reference = copy.deepcopy(block)
    positions = torch.arange(32).expand(8, -1)
    x = torch.randn(8, 32, 64)
    x[..., :3] *= 15  # loud channels, AWQ's premise
    grid = Grid(4, 32)
    names = ["mixer.q_proj", "mixer.k_proj", "mixer.v_proj", "mixer.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    modules = dict(block.named_modules())
    seen = {}
    hooks = [modules[n].register_forward_pre_hook(lambda m, a, n=n: seen.__setitem__(n, a[0])) for n in names]
    with torch.no_grad():
        target = block(x, positions, None)
    for h in hooks:
        h.remove()
    shrinks = awq_block(block, seen, positions, grid, search_rows=8)

    def quantized_output(b, shrink):
        b = copy.deepcopy(b)
        with torch.no_grad():
            for n in names:
                lin = dict(b.named_modules())[n]
                lin.weight.copy_(fake_quantize(lin.weight, grid, shrink.get(n, 1.0)))
            return b(x, positions, None)

    awq_err = float((quantized_output(block, shrinks) - target).pow(2).mean())
    rtn_err = float((quantized_output(reference, {}) - target).pow(2).mean())
    assert awq_err < 0.8 * rtn_err


def test_grid_params_shrink_narrows_the_range():
    w = torch.randn(4, 64)
    s1, _ = grid_params(w, Grid(4, 32))
    s2, _ = grid_params(w, Grid(4, 32), 0.5)
    torch.testing.assert_close(s2, s1 / 2, rtol=2e-3, atol=0)
