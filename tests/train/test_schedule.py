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
