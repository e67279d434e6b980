import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model, tiny_run_config

from lmforge.checkpoint import load_checkpoint
from lmforge.data.loader import eval_windows
from lmforge.errors import ConfigError
from lmforge.model.transformer import Transformer
from lmforge.train.distill import distill, distillation_objective, student_mixers
from lmforge.train.metrics import read_metrics
from lmforge.train.trainer import train

SPARSE = ["model.sparse_block_q=4", "model.sparse_block_k=4", "model.sparse_top_k=0.1", "model.sparse_top_p=0.1"]


def divergence(student, teacher, prepared):
    """KL(teacher || student) on the first validation windows."""
    windows = torch.stack(eval_windows(prepared.shard("val").tokens, 32, 32 * 8)[:8])
    with torch.no_grad():
        return float(distillation_objective(teacher, 0.0)(student, windows[:, :-1], windows[:, 1:]))


@pytest.fixture(scope="module")
def dense(tmp_path_factory, corpus_dir, prepared):
    out = tmp_path_factory.mktemp("dense")
    config = tiny_run_config(corpus_dir, out, prepared.dir, steps=20, lr=1e-2, optimizer="adamw")  # the student inherits it
    train(config, progress=False, log=lambda s: None)
    return out


def test_student_starts_as_the_teacher_and_learns_to_match_it(dense, tmp_path, prepared):
    result = distill(dense, tmp_path / "kl", "sparse", None, "kl", 0.1,
                     SPARSE + ["train.steps=30", "train.lr=3e-3", "train.seq_len=32"], progress=False)
    assert result.step == 30 and result.final_eval is not None
    teacher = load_checkpoint(dense)
    student = load_checkpoint(tmp_path / "kl")
    assert student.config.model.mixers == ["sparse", "sparse"]
    untrained = Transformer(student.config.model)
    untrained.load_state_dict(teacher.model.state_dict())  # the dense weights under the sparse mask
    before, after = divergence(untrained, teacher.model, prepared), divergence(student.model, teacher.model, prepared)
    assert 0 < after < before


def test_plain_fine_tuning_uses_the_next_token_loss(dense, tmp_path):
    distill(dense, tmp_path / "ce", "sparse", None, "ce", 0.0, SPARSE + ["train.steps=3"], progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "ce" / "metrics.jsonl") if "loss" in r]
    assert losses[0] > 1.0  # cross-entropy on text, not a divergence from the teacher
    assert load_checkpoint(tmp_path / "ce").config.model.mixers == ["sparse", "sparse"]


def test_the_mse_variant_adds_the_weighted_residual_stream_error():
    teacher = tiny_model(64)
    student = tiny_model(64, mixers=["sparse"], sparse_block_q=4, sparse_block_k=4, sparse_top_k=0.1, sparse_top_p=0.1)
    student.load_state_dict(teacher.state_dict())
    x = torch.randint(0, 64, (2, 33), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        kl = distillation_objective(teacher, 0.0)(student, x[:, :-1], x[:, 1:])
        both = distillation_objective(teacher, 2.0)(student, x[:, :-1], x[:, 1:])
        mse = torch.stack([F.mse_loss(a, b) for a, b in zip(student.hidden_states(x[:, :-1])[1:],
                                                            teacher.hidden_states(x[:, :-1])[1:])]).mean()
        itself = distillation_objective(teacher, 2.0)(teacher, x[:, :-1], x[:, 1:])
    assert kl > 0 and mse > 0  # the sparse student differs from its dense teacher
    torch.testing.assert_close(both, kl + 2.0 * mse)
    assert abs(float(itself)) < 1e-5


def test_bad_requests():
    with pytest.raises(ConfigError, match="layer 5 does not exist"):
        student_mixers(2, ["softmax"], "sparse", [5])
    with pytest.raises(ConfigError, match="unknown mixer 'dense'"):
        student_mixers(2, ["softmax"], "dense", None)
