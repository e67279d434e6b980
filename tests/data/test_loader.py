import numpy as np
import pytest

from lmforge.data.loader import WindowLoader, eval_windows
from lmforge.errors import DataError


def test_batches_are_next_token_pairs_and_reproducible():
    tokens = np.arange(1000, dtype=np.uint16)
    a = WindowLoader(tokens, seq_len=16, batch_size=4, seed=3)
    x, y = a.batch(5)
    assert x.shape == y.shape == (4, 16) and x.dtype.is_floating_point is False
    assert (y == x + 1).all()  # tokens are consecutive integers
    b = WindowLoader(tokens, seq_len=16, batch_size=4, seed=3)
    assert all((b.batch(i)[0] == a.batch(i)[0]).all() for i in (7, 0, 5))  # any order, same batches
    c = WindowLoader(tokens, seq_len=16, batch_size=4, seed=4)
    assert not (c.batch(5)[0] == x).all()


def test_an_epoch_visits_every_window_once():
    tokens = np.arange(16 * 40 + 5, dtype=np.uint32)
    loader = WindowLoader(tokens, seq_len=16, batch_size=1, seed=0)
    n = loader.windows_per_epoch
    starts = [int(loader.batch(i)[0][0, 0]) for i in range(n)]
    assert len(set(starts)) == n and len({s % 16 for s in starts}) == 1  # one offset per epoch
    assert max(starts) + 17 <= len(tokens)


def test_eval_windows_predict_each_token_once():
    tokens = np.arange(50, dtype=np.uint16)
    windows = eval_windows(tokens, 16)
    predicted = np.concatenate([w[1:].numpy() for w in windows])
    assert predicted.tolist() == list(range(1, 50))
    assert sum(len(w) - 1 for w in eval_windows(tokens, 16, max_tokens=20)) == 20


def test_too_small_inputs():
    with pytest.raises(DataError, match="too few"):
        WindowLoader(np.arange(20, dtype=np.uint16), 16, 2, 0)
    with pytest.raises(DataError, match="validation split is empty"):
        eval_windows(np.arange(1, dtype=np.uint16), 16)
