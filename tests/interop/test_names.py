import torch

from lmforge.interop.names import GGUF, HF, external_names, from_llama_cpp_rows, to_llama_cpp_rows


def test_llama_cpp_row_order_on_a_hand_made_case():
    # two heads of dimension 4; rows labelled by (head, row) = 10 * head + row
    w = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0], [12.0], [13.0]])
    permuted = to_llama_cpp_rows(w, n_heads=2)
    # half-split pairs (0, 2) and (1, 3) become neighbours within each head
    assert permuted.flatten().tolist() == [0.0, 2.0, 1.0, 3.0, 10.0, 12.0, 11.0, 13.0]
    assert torch.equal(from_llama_cpp_rows(permuted, n_heads=2), w)


def test_permutation_round_trips_on_matrices():
    w = torch.randn(3 * 8, 5)
    assert torch.equal(from_llama_cpp_rows(to_llama_cpp_rows(w, 3), 3), w)
    assert not torch.equal(to_llama_cpp_rows(w, 3), w)


def test_name_tables_cover_every_layer():
    hf, gguf = external_names(2, HF), external_names(2, GGUF)
    assert hf["layers.1.mixer.q_proj.weight"] == "model.layers.1.self_attn.q_proj.weight"
    assert gguf["layers.1.mlp.down_proj.weight"] == "blk.1.ffn_down.weight"
    assert gguf["embed.weight"] == "token_embd.weight" and hf["head.weight"] == "lm_head.weight"
    assert len(set(hf.values())) == len(hf) and len(set(gguf.values())) == len(gguf)
