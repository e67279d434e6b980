import numpy as np
import pytest

from lmforge.data.shards import ShardWriter, TokenShard, token_dtype
from lmforge.errors import DataError


@pytest.mark.parametrize("vocab", [300, 70000])
def test_writer_reader_round_trip(tmp_path, vocab):
    docs = [[1, 2, 3], [], [vocab - 1, 0]]
    w = ShardWriter(tmp_path / "train", vocab)
    for d in docs:
        w.add(d)
    w.close()
    shard = TokenShard(tmp_path / "train", vocab)
    assert shard.tokens.dtype == token_dtype(vocab) == (np.uint16 if vocab < 65536 else np.uint32)
    assert shard.tokens.tolist() == [1, 2, 3, vocab - 1, 0]
    assert shard.doc_ends.tolist() == [3, 3, 5]


def test_out_of_range_and_damaged_shards(tmp_path):
    w = ShardWriter(tmp_path / "s", 10)
    with pytest.raises(DataError, match="out of range"):
        w.add([10])
    w.add([1, 2])
    w.close()
    with open(tmp_path / "s.bin", "ab") as f:
        f.write(b"\x01")
    with pytest.raises(DataError, match="truncated"):
        TokenShard(tmp_path / "s", 10)
    with open(tmp_path / "s.bin", "ab") as f:
        f.write(b"\x01")
    with pytest.raises(DataError, match="does not match its index"):
        TokenShard(tmp_path / "s", 10)
    with pytest.raises(DataError, match="missing"):
        TokenShard(tmp_path / "other", 10)
