import torch

from lmforge.ops.rope import apply_rope, rope_cos_sin


def _rotated(x, pos, theta=10000.0):
    cos, sin = rope_cos_sin(torch.tensor([[pos]]), x.shape[-1], theta, torch.float64)
    return apply_rope(x.view(1, 1, 1, -1), cos, sin).flatten()


def test_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    s1 = _rotated(q, 7) @ _rotated(k, 3)
    s2 = _rotated(q, 1007) @ _rotated(k, 1003)
    s3 = _rotated(q, 8) @ _rotated(k, 3)
    torch.testing.assert_close(s1, s2, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(s1, s3)


def test_rotation_preserves_norm_and_position_zero_is_identity():
    x = torch.randn(8, dtype=torch.float64)
    torch.testing.assert_close(_rotated(x, 0), x)
    torch.testing.assert_close(_rotated(x, 123).norm(), x.norm())


def test_half_split_pairs_match_explicit_rotation():
    """Pair (i, i + d/2) rotates by pos * theta^(-2i/d), the Hugging Face Llama layout."""
    d, pos, theta = 8, 5, 100.0
    x = torch.randn(d, dtype=torch.float64)
    out = _rotated(x, pos, theta)
    for i in range(d // 2):
        a = pos * theta ** (-2 * i / d)
        c, s = torch.cos(torch.tensor(a, dtype=torch.float64)), torch.sin(torch.tensor(a, dtype=torch.float64))
        torch.testing.assert_close(out[i], x[i] * c - x[i + d // 2] * s)
        torch.testing.assert_close(out[i + d // 2], x[i + d // 2] * c + x[i] * s)
