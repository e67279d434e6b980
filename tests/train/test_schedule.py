import math

from lmforge.config import TrainConfig
from lmforge.train.schedule import lr_multiplier


def test_wsd_warms_up_holds_and_decays_to_floor():
    cfg = TrainConfig(steps=100, warmup_steps=10, schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.1)
    m = [lr_multiplier(s, cfg) for s in range(100)]
    assert m[0] == 0.1 and m[9] == 1.0
    assert all(v == 1.0 for v in m[10:80])
    assert all(a > b for a, b in zip(m[80:], m[81:]))
    assert math.isclose(m[99], 0.1)


def test_cosine_ends_at_floor():
    cfg = TrainConfig(steps=50, warmup_steps=5, schedule="cosine", min_lr_ratio=0.0)
    m = [lr_multiplier(s, cfg) for s in range(50)]
    assert m[4] == 1.0 and math.isclose(m[49], 0.0, abs_tol=1e-12)
    assert all(a >= b for a, b in zip(m[5:], m[6:]))
    mid = lr_multiplier(5 + 22, cfg)
    assert 0.45 < mid < 0.55


def test_a_time_budget_drives_the_decay():
    cfg = TrainConfig(steps=10**6, warmup_steps=2, schedule="wsd", decay_fraction=0.25, time_budget=100.0)
    assert lr_multiplier(1, cfg, elapsed=0.5) == 1.0  # the end of warmup, in steps
    assert lr_multiplier(50, cfg, elapsed=75.0) == 1.0
    assert math.isclose(lr_multiplier(50, cfg, elapsed=87.5), 0.5)
    assert lr_multiplier(50, cfg, elapsed=120.0) == 0.0
    cosine = TrainConfig(steps=10**6, warmup_steps=0, schedule="cosine", time_budget=10.0)
    assert math.isclose(lr_multiplier(7, cosine, elapsed=5.0), 0.5)
