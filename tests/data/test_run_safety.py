"""`lmforge data run` destroys nothing it did not write, stops its workers when killed, and
reports in one line what stops it."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

import pytest
from helpers import write_corpus

from lmforge.cli import main
from lmforge.data import executors
from lmforge.data import run as run_module
from lmforge.data.executors import LocalExecutor
from lmforge.data.pipeline import pipeline_config_from_dict
from lmforge.data.run import read_documents, run_pipeline


def snapshot(root) -> dict[str, bytes | None]:
    """Every file's bytes (and every directory, as None) under `root`, by relative path."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def pipeline_toml(tmp_path, steps: str = "", name: str = "pipeline.toml") -> str:
    """A tiny pipeline config over a generated corpus at tmp_path/corpus."""
    write_corpus(tmp_path / "corpus", 8)
    config = tmp_path / name
    config.write_text(f'[[sources]]\ncorpus = "{tmp_path / "corpus"}"\n{steps}\n'
                      '[output]\nvocab_size = 300\nval_bytes = 2000\n[run]\nworkers = 1\nshards = 2\n')
    return str(config)


def refused(argv: list[str], capsys) -> str:
    """Run the CLI; assert it stops with status 2 and a one-line message; return the message."""
    code = main(["data", "run", *argv, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_output_dir_holding_user_files_is_left_alone(tmp_path, capsys):
    config = pipeline_toml(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert "'notes.txt'" in refused([config, f"output.dir={tmp_path / 'out'}"], capsys)
    assert snapshot(tmp_path) == before


def test_earlier_output_is_replaced_only_with_overwrite(tmp_path, capsys):
    config = pipeline_toml(tmp_path)
    out = f"output.dir={tmp_path / 'out'}"
    assert main(["data", "run", config, out, "--no-progress"]) == 0
    before = snapshot(tmp_path)
    assert "--overwrite" in refused([config, out], capsys)
    assert snapshot(tmp_path) == before
    assert main(["data", "run", config, out, "--overwrite", "--no-progress"]) == 0
    assert "resuming the earlier run" in capsys.readouterr().out


@pytest.mark.parametrize("setting", ["output.dir=corpus", "output.dir=corpus/out", "output.dir=.",
                                     "run.work_dir=corpus", "run.work_dir=corpus/work", "run.work_dir=out/work",
                                     "run.work_dir=out"])
def test_directories_overlapping_an_input_or_each_other_are_refused(tmp_path, capsys, setting):
    config = pipeline_toml(tmp_path)
    key, value = setting.split("=")
    argv = [config, f"output.dir={tmp_path / 'out'}", f"{key}={tmp_path / value}"]
    before = snapshot(tmp_path)
    refused(argv, capsys)
    assert snapshot(tmp_path) == before


def test_work_dir_holding_user_files_is_left_alone(tmp_path, capsys):
    config = pipeline_toml(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "plan.json").write_text('{"my": "plan"}')
    (tmp_path / "mine" / "stage0").mkdir()
    before = snapshot(tmp_path)
    err = refused([config, f"output.dir={tmp_path / 'out'}", f"run.work_dir={tmp_path / 'mine'}"], capsys)
    assert "run.work_dir" in err
    assert snapshot(tmp_path) == before


def test_unwritable_output_dir_is_one_line(tmp_path, capsys, monkeypatch):
    config = pipeline_toml(tmp_path)
    (tmp_path / "afile").write_text("a file, not a directory")
    before = snapshot(tmp_path)
    assert "not a writable directory" in refused([config, f"output.dir={tmp_path / 'afile' / 'out'}"], capsys)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # as for a user without write permission
    assert "not a writable directory" in refused([config, f"output.dir={tmp_path / 'out'}"], capsys)
    assert snapshot(tmp_path) == before


def test_run_that_keeps_no_document_writes_its_report_to_the_work_dir(tmp_path, capsys):
    out = f"output.dir={tmp_path / 'out'}"
    assert main(["data", "run", pipeline_toml(tmp_path), out, "--no-progress"]) == 0
    earlier = snapshot(tmp_path / "out")
    config = pipeline_toml(tmp_path, '[[steps]]\ntype = "gopher_quality"\nmin_doc_words = 1000000\n', "drop_all.toml")
    err = refused([config, out, "--overwrite"], capsys)
    report = tmp_path / "out.work" / "report.html"
    assert str(report) in err and "<table>" in report.read_text()
    assert json.loads(report.with_suffix(".json").read_text())["steps"][0]["dropped"]["gopher_short_doc"] == 8
    assert snapshot(tmp_path / "out") == earlier


def raw_config(tmp_path, shards: int, out: str) -> dict:
    return {"sources": [{"corpus": str(tmp_path / "corpus")}],
            "steps": [{"type": "exact_dedup"}, {"type": "minhash_dedup"}],
            "output": {"dir": str(tmp_path / out), "vocab_size": 300, "val_bytes": 2000},
            "run": {"workers": 1, "shards": shards}}


def final_documents(cfg) -> list[tuple[str, str]]:
    last = cfg.work_dir / "stage2"
    return sorted((d.id, d.text) for shard in range(cfg.run.shards) for d in read_documents(last / f"{shard:05d}.jsonl.gz"))


def test_more_shards_than_documents_gives_the_same_documents(tmp_path):
    write_corpus(tmp_path / "corpus", 5)
    (tmp_path / "corpus" / "copy.txt").write_bytes((tmp_path / "corpus" / "doc001.txt").read_bytes())
    one = pipeline_config_from_dict(raw_config(tmp_path, 1, "one"))
    many = pipeline_config_from_dict(raw_config(tmp_path, 16, "many"))
    for cfg in (one, many):
        run_pipeline(cfg, progress=False, log=lambda s: None)
    assert final_documents(many) == final_documents(one) and len(final_documents(one)) == 5
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "many" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_killed_run_with_its_own_work_dir_resumes_to_the_same_output(tmp_path, monkeypatch):
    write_corpus(tmp_path / "corpus", 6)
    run_pipeline(pipeline_config_from_dict(raw_config(tmp_path, 3, "whole")), progress=False, log=lambda s: None)
    raw = raw_config(tmp_path, 3, "again")
    raw["run"]["work_dir"] = str(tmp_path / "scratch")
    cfg = pipeline_config_from_dict(raw)
    read = run_module.source_documents

    def killed_at_shard_2(cfg, shard, skipped):
        if shard == 2:
            raise KeyboardInterrupt
        return read(cfg, shard, skipped)

    monkeypatch.setattr(run_module, "source_documents", killed_at_shard_2)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, progress=False, log=lambda s: None)
    monkeypatch.setattr(run_module, "source_documents", read)
    logs = []
    run_pipeline(cfg, progress=False, log=logs.append)
    assert logs[0] == f"resuming the earlier run in {tmp_path / 'scratch'}: reusing the finished shard results of stage 1 (2 of 3)"
    for name in ("train.bin", "val.bin", "tokenizer.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


class SignallingBar:
    """A progress bar whose first update interrupts the driver, as Ctrl-C or `kill` would."""

    def __init__(self, interrupt):
        self.interrupt = interrupt

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self):
        self.interrupt()


def interrupt_with_ctrl_c():
    raise KeyboardInterrupt


def interrupt_with_sigterm():
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture
def sigterm_unhandled_by_map():
    """A SIGTERM that the executor does not catch fails the test instead of killing pytest."""

    def fail(signum, frame):
        raise AssertionError("SIGTERM reached the handler outside the executor")

    previous = signal.signal(signal.SIGTERM, fail)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("interrupt, exception", [(interrupt_with_ctrl_c, KeyboardInterrupt),
                                                  (interrupt_with_sigterm, SystemExit)])
def test_interrupted_map_stops_every_worker(monkeypatch, sigterm_unhandled_by_map, interrupt, exception):
    monkeypatch.setattr(executors, "_bar", lambda *args: SignallingBar(interrupt))
    started = time.monotonic()
    with pytest.raises(exception):
        LocalExecutor(2).map(time.sleep, [0, 20, 20, 20, 20])  # the first task returns, the others would run on
    assert time.monotonic() - started < 10  # the sleeping tasks were killed and the queued ones cancelled
    assert multiprocessing.active_children() == []
