"""The whole chain, small: curate, train a hybrid with NAMO, quantize to int4, serve, score through the server."""

import json

import pytest
from helpers import write_corpus

from lmforge.cli import main

pytest.importorskip("lm_eval")


def test_the_chain_runs_every_stage_on_one_model(tmp_path, capsys):
    write_corpus(tmp_path / "corpus", n_docs=60, seed=3)
    out = tmp_path / "chain"
    assert main(["chain", "--quick", "--out", str(out), "--corpus", str(tmp_path / "corpus"), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    stages = {s["stage"].split(":")[0]: s for s in report["stages"]}
    assert list(stages) == ["data", "train", "quantize", "serve + score through the server"]
    assert stages["train"]["steps"] == 8 and stages["train"]["val_bpb"] > 0
    assert stages["quantize"]["pydoc_ppl_int4"] > 0
    scored = stages["serve + score through the server"]
    assert 0 <= scored["arithmetic_mc_acc"] <= 1 and scored["pydoc_bits_per_byte"] > 0
    assert 0 <= scored["mean_dtr"] <= 1 and scored["dtr_tokens"] > 0
    assert "total" in capsys.readouterr().out
