import torch

from lmforge.eval.recall import IGNORE, mqar_accuracy, mqar_batch


def test_mqar_layout_and_answers():
    g = torch.Generator().manual_seed(0)
    tokens, targets = mqar_batch(3, pairs=5, vocab=40, generator=g)
    assert tokens.shape == targets.shape == (3, 15)
    for row, target in zip(tokens, targets):
        pairs = dict(zip(row[0:10:2].tolist(), row[1:10:2].tolist()))
        assert len(pairs) == 5 and all(k < 20 <= v < 40 for k, v in pairs.items())
        asked = row[10:].tolist()
        assert sorted(asked) == sorted(pairs)
        assert target[10:].tolist() == [pairs[k] for k in asked]
        assert (target[:10] == IGNORE).all()
        assert not set(target[10:].tolist()) & set(row[10:].tolist())  # answers are never inputs


def test_accuracy_of_a_perfect_and_a_useless_model():
    g = torch.Generator().manual_seed(1)
    tokens, targets = mqar_batch(4, pairs=6, vocab=30, generator=g)

    class Oracle(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(targets.clamp(min=0), 30).float()

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(*x.shape, 30)

    assert mqar_accuracy(Oracle(), tokens, targets) == 1.0
    assert mqar_accuracy(Constant(), tokens, targets) < 0.2
