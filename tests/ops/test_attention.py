import torch

from lmforge.ops.attention import attention, attention_reference, decode_attention


def test_causal_attention_matches_reference_float64():
    torch.manual_seed(0)
    q = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    k = torch.randn(2, 2, 9, 8, dtype=torch.float64)
    v = torch.randn(2, 2, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(attention(q, k, v), attention_reference(q, k, v), rtol=1e-10, atol=1e-12)


def test_masked_attention_matches_reference_float64():
    torch.manual_seed(1)
    q = torch.randn(2, 6, 3, 8, dtype=torch.float64)
    k = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    v = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    positions = torch.tensor([[4, 5, 6], [2, 3, 4]])
    mask = (torch.arange(7)[None, None, :] <= positions[:, :, None])[:, None]
    torch.testing.assert_close(attention(q, k, v, mask), attention_reference(q, k, v, mask), rtol=1e-10, atol=1e-12)


def test_gqa_equals_repeated_kv():
    torch.manual_seed(2)
    q = torch.randn(1, 6, 5, 4, dtype=torch.float64)
    k = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    v = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    repeated = attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1))
    torch.testing.assert_close(attention(q, k, v), repeated, rtol=1e-12, atol=1e-12)


def test_decode_attention_matches_reference_float64():
    torch.manual_seed(3)
    q = torch.randn(3, 6, 2, 8, dtype=torch.float64)
    k, v = torch.randn(3, 2, 11, 8, dtype=torch.float64), torch.randn(3, 2, 11, 8, dtype=torch.float64)
    visible = torch.rand(3, 1, 2, 11) < 0.7
    visible[..., 0] = True
    bias = torch.zeros(visible.shape, dtype=torch.float64).masked_fill(~visible, float("-inf"))
    head_major = (k.transpose(0, 1).contiguous(), v.transpose(0, 1).contiguous())  # [Hkv, B, S, d]
    torch.testing.assert_close(decode_attention(q, *head_major, bias), attention_reference(q, k, v, visible),
                               rtol=1e-12, atol=1e-12)
