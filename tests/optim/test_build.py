import json
from pathlib import Path

import pytest
from helpers import tiny_model

from lmforge.config import MATRIX_LR, TrainConfig
from lmforge.optim.build import build_optimizer, split_parameters


def _groups(opt):
    return {g["name"]: g for g in opt.param_groups}


@pytest.mark.parametrize("name", ["adamw", "muon", "namo", "namo_d"])
def test_every_optimizer_gets_the_same_groups_at_their_rates(name):
    model = tiny_model(100, tie_embeddings=False, attention_bias=True)
    opt = build_optimizer(model, TrainConfig(optimizer=name, lr=1e-3, matrix_lr=2e-2, weight_decay=0.1))
    groups = _groups(opt)
    assert list(groups) == ["matrix", "embedding", "gain"]
    split = split_parameters(model)
    for group_name, group in groups.items():
        assert [id(p) for p in group["params"]] == [id(p) for p in split[group_name]]
    assert (groups["matrix"]["kind"], groups["matrix"]["lr"], groups["matrix"]["weight_decay"]) == (name, 2e-2, 0.1)
    assert (groups["embedding"]["kind"], groups["embedding"]["lr"], groups["embedding"]["weight_decay"]) == ("adamw", 1e-3, 0.1)
    assert (groups["gain"]["kind"], groups["gain"]["lr"], groups["gain"]["weight_decay"]) == ("adamw", 1e-3, 0.0)


def test_matrix_rate_defaults_to_lr():
    opt = build_optimizer(tiny_model(64), TrainConfig(optimizer="adamw", lr=2e-3))
    assert [g["lr"] for g in opt.param_groups] == [2e-3, 2e-3, 2e-3]


def test_adamw_matrices_follow_the_matrix_rate():
    model = tiny_model(64)
    opt = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3, matrix_lr=4e-3))
    matrix = _groups(opt)["matrix"]
    assert matrix["lr"] == 4e-3 and matrix["betas"] == (0.9, 0.95)
    assert all(p.dim() == 2 for p in matrix["params"]) and len(matrix["params"]) == 2 * 7  # q k v o, gate up down


def test_layout_difference_names_what_differs():
    model = tiny_model(64)
    muon = build_optimizer(model, TrainConfig(optimizer="muon"))
    assert muon.layout_difference(build_optimizer(model, TrainConfig(optimizer="muon", lr=1.0)).state_dict()) is None
    difference = muon.layout_difference(build_optimizer(model, TrainConfig(optimizer="namo")).state_dict())
    assert "matrix (namo, 14 tensors)" in difference and "matrix (muon, 14 tensors)" in difference
    old = {"param_groups": [{"kind": "adamw", "params": list(range(20))}, {"kind": "adamw", "params": list(range(9))}]}
    assert "unnamed (adamw, 20 tensors)" in muon.layout_difference(old)


def test_the_default_is_namo_at_the_rate_the_recorded_sweep_chose():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.matrix_rate) == ("namo", 8e-3)
    assert TrainConfig(optimizer="adamw", lr=2e-3).matrix_rate == 2e-3
    assert TrainConfig(optimizer="muon", matrix_lr=1e-2).matrix_rate == 1e-2
    record = json.loads((Path(__file__).parents[2] / "benchmarks/results/optimizers.json").read_text())
    chosen = {row["optimizer"]: row["matrix_lr"] for row in record["summary"]["sweep"] if row["chosen"]}
    assert chosen == {"AdamW": chosen["AdamW"], "Muon": MATRIX_LR["muon"], "NAMO": MATRIX_LR["namo"],
                      "NAMO-D": MATRIX_LR["namo_d"]}
