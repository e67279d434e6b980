"""`lmforge data run`: execute a pipeline shard by shard, resolve global steps, mix, tokenize.

The steps are cut into stages at each global step (deduplication). Stage j runs, for every
input shard in parallel: drop the ids the previous global step chose, apply the stage's
document steps, write the surviving documents (`<work>/stage<j>/<shard>.jsonl.gz`) and a
summary for the next global step, which the driver then resolves over all shards. After
the last stage the driver splits validation off by id hash, plans the domain mix, trains
the tokenizer and writes the token shards `lmforge train` reads, with `report.json` and
`report.html` beside them.

Every shard result is written atomically, so a run killed midway and started again skips
the shards it completed and produces the same output. The work directory remembers the
settings that shape the output; changing them starts the work afresh. Before any work the
output and work directories are claimed (`lmforge.fileio.claim_output`): neither may hold
anything a pipeline did not write, overlap an input or each other, and an earlier output
is replaced only with `overwrite`.
"""

from __future__ import annotations

import gzip
import itertools
import json
import pickle
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from lmforge.data.document import Document
from lmforge.data.executors import make_executor
from lmforge.data.mixing import plan_epochs, repeats
from lmforge.data.pipeline import PipelineConfig, build_steps
from lmforge.data.prepare import MIN_VOCAB, PREPARED, PreparedData, sample_texts, write_prepared
from lmforge.data.readers import corpus_paths, read_corpus
from lmforge.data.report import write_report
from lmforge.data.split import choose_validation
from lmforge.data.steps import GlobalStep, Step, StepStats, drop_ids, run_steps
from lmforge.errors import DataError, OutputError
from lmforge.fileio import OutputKind, atomic_dir, atomic_path, claim_output, recover_dir, refuse_overlap, write_json
from lmforge.tokenizer import Tokenizer

PLAN = "plan.json"
REPORT_FILES = ("report.json", "report.html")  # in the work directory only when no documents survived
WORK_DIR = OutputKind("data pipeline work directory (run.work_dir)", PLAN, "sources", frozenset({
    PLAN, "stage*", *REPORT_FILES, *(f".{name}.*.tmp" for name in (PLAN, *REPORT_FILES))}))


@dataclass
class Stage:
    """Steps run per shard (indices into the pipeline's steps), after the ids of `drops_for`
    (a global step's index) are removed, and the global step this stage summarises for."""

    index: int
    drops_for: int | None
    local: list[int]
    summarises_for: int | None


def plan_stages(steps: list[Step]) -> list[Stage]:
    """Cut the steps at each global step: stage j ends where global step j's summary is needed."""
    stages, local, drops_for = [], [], None
    for i, step in enumerate(steps):
        if isinstance(step, GlobalStep):
            stages.append(Stage(len(stages), drops_for, local, i))
            local, drops_for = [], i
        else:
            local.append(i)
    stages.append(Stage(len(stages), drops_for, local, None))
    return stages


class DropIds(Step):
    """A global step's decision applied to one shard: its chosen ids are dropped (in that step's name)."""

    def __init__(self, ids: frozenset[str], reason: str, name: str):
        self.ids, self.reason, self.name = ids, reason, name

    def process(self, docs: Iterator[Document], stats: StepStats) -> Iterator[Document]:
        return drop_ids(docs, self.ids, self.reason, stats)


@dataclass
class ShardTask:
    cfg: PipelineConfig
    stage: Stage
    shard: int
    drop: frozenset[str]


def write_documents(path: Path, docs: Iterable[Document]) -> None:
    """Documents as gzipped JSON lines, atomically."""
    with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as f:
        for doc in docs:
            f.write(json.dumps({"id": doc.id, "text": doc.text, "metadata": doc.metadata}, ensure_ascii=False) + "\n")


def read_documents(path: Path) -> Iterator[Document]:
    """Documents written by `write_documents`."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            yield Document(record["text"], record["id"], record["metadata"])


def source_documents(cfg: PipelineConfig, shard: int, skipped: Counter) -> Iterator[Document]:
    """Shard `shard` of every source, each document labelled with its domain (ids prefixed by
    the source's index when there are several sources, so they stay unique); bad records are
    counted in `skipped` by reason."""
    for i, source in enumerate(cfg.sources):
        for doc in read_corpus(source.corpus, source.text_field, shard, cfg.run.shards, skipped):
            doc.metadata["domain"] = source.domain or doc.metadata.get("domain") or "default"
            if len(cfg.sources) > 1:
                doc.id = f"{i}/{doc.id}"
            yield doc


def _stage_dir(cfg: PipelineConfig, stage: int) -> Path:
    return cfg.work_dir / f"stage{stage}"


def _result_path(cfg: PipelineConfig, stage: int, shard: int) -> Path:
    return _stage_dir(cfg, stage) / f"{shard:05d}.pkl"


def _excluded_path(cfg: PipelineConfig, stage: int, shard: int) -> Path:
    return _stage_dir(cfg, stage) / f"{shard:05d}.excluded.jsonl.gz"


def run_shard(task: ShardTask) -> dict[str, Any]:
    """One stage on one shard: documents in, steps applied, documents and summary out."""
    cfg, stage = task.cfg, task.stage
    out_dir = _stage_dir(cfg, stage.index)
    result_path = _result_path(cfg, stage.index, task.shard)
    if result_path.is_file():  # completed by an earlier, interrupted run
        return pickle.loads(result_path.read_bytes())
    steps = build_steps(cfg.steps)
    read = StepStats()
    if stage.index == 0:
        docs = source_documents(cfg, task.shard, read.dropped)
    else:
        docs = read_documents(_stage_dir(cfg, stage.index - 1) / f"{task.shard:05d}.jsonl.gz")
    chain = [steps[i] for i in stage.local]
    if stage.drops_for is not None:
        chain.insert(0, DropIds(task.drop, steps[stage.drops_for].reason, steps[stage.drops_for].name))
    excluded: list | None = [] if cfg.output.excluded else None
    docs, stats = run_steps(chain, docs, excluded)
    kept = list(docs)
    read.docs_out = stats[0].docs_in if stats else len(kept)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_documents(out_dir / f"{task.shard:05d}.jsonl.gz", kept)
    if excluded is not None:
        write_documents(_excluded_path(cfg, stage.index, task.shard),
                        (Document(doc.text, doc.id, {**doc.metadata, "dropped_by": step, "reason": reason})
                         for doc, step, reason in excluded))
    indices = ([stage.drops_for] if stage.drops_for is not None else []) + stage.local
    result = {
        "read": read.to_dict(),
        "stats": dict(zip(indices, (s.to_dict() for s in stats))),
        "summary": steps[stage.summarises_for].summarize(kept) if stage.summarises_for is not None else None,
        "listing": [(doc.id, len(doc.text.encode("utf-8")), doc.metadata.get("domain", "default"),
                     doc.metadata.get("language")) for doc in kept],
    }
    with atomic_path(result_path) as tmp:
        tmp.write_bytes(pickle.dumps(result))
    return result


def _output_shaping(cfg: PipelineConfig) -> dict:
    """The settings that decide the work directory's content (not how it is executed)."""
    plan = cfg.to_dict()
    plan["run"] = {"shards": cfg.run.shards, "seed": cfg.run.seed}
    return plan


def claim_directories(cfg: PipelineConfig, overwrite: bool = False) -> None:
    """Check, before any work, that the run destroys nothing lmforge did not write: the output
    directory may hold only an earlier output (replaced with `overwrite`), the work directory
    only an earlier run's work (resumed or started afresh), and neither may overlap an input
    or the other."""
    inputs = [path for source in cfg.sources for path in corpus_paths(source.corpus)]
    claim_output(recover_dir(cfg.output.dir), PREPARED, inputs, overwrite)
    try:
        refuse_overlap(cfg.work_dir, [cfg.output.dir])
    except OutputError:
        raise OutputError(f"the work directory {cfg.work_dir} overlaps output.dir={cfg.output.dir}; set run.work_dir "
                          f"to a directory outside it (or leave it unset for {cfg.output.dir}.work)") from None
    claim_output(cfg.work_dir, WORK_DIR, inputs, overwrite=True)  # an earlier run's work is ours to reuse


def _open_work_dir(cfg: PipelineConfig) -> None:
    """Keep the work of an earlier run with the same plan, empty one planned otherwise, and
    record the plan. `claim_directories` has checked that it holds nothing else."""
    work, plan = cfg.work_dir, _output_shaping(cfg)
    plan_path = work / PLAN
    if plan_path.is_file() and json.loads(plan_path.read_text(encoding="utf-8")) != plan:
        for entry in work.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    work.mkdir(parents=True, exist_ok=True)
    write_json(plan_path, plan)


def _log_reused(cfg: PipelineConfig, stages: list[Stage], log) -> None:
    """Say how many shard results of each stage an earlier (interrupted) run left, which this run reuses."""
    shards = cfg.run.shards
    done = [sum(_result_path(cfg, stage.index, shard).is_file() for shard in range(shards)) for stage in stages]
    if any(done):
        reused = ", ".join(f"stage {j + 1} ({n} of {shards})" for j, n in enumerate(done) if n)
        log(f"resuming the earlier run in {cfg.work_dir}: reusing the finished shard results of {reused}")


def _too_few_survivors(cfg: PipelineConfig, listing: list, read: StepStats, totals: list[StepStats], languages: dict,
                       started: float) -> DataError:
    """The error that stops a run which kept fewer than two documents, once the report saying
    which steps dropped them is written to the work directory (the output directory stays as it was)."""
    survivors = Counter()
    for _, size, domain, _ in listing:
        survivors[domain] += size
    write_report(cfg.work_dir, cfg, read, totals, {"before": dict(survivors), "after": {}, "epochs": {}}, languages,
                 {"splits": {}, "seconds": round(time.perf_counter() - started, 2)})
    return DataError(f"only {len(listing)} document(s) survived the pipeline; at least 2 are needed: see what each step "
                     f"dropped in {cfg.work_dir / 'report.html'}")


def _final_documents(cfg: PipelineConfig, last: int) -> Iterator[Document]:
    for shard in range(cfg.run.shards):
        yield from read_documents(_stage_dir(cfg, last) / f"{shard:05d}.jsonl.gz")


def write_parquet(path: Path, docs: Iterable[Document], batch: int = 8192) -> None:
    """Documents as a Parquet file of id, text and metadata (a JSON string: documents' metadata keys differ)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("output.documents='parquet' needs pyarrow: pip install 'lmforge[parquet]'") from None
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("metadata", pa.string())])
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        rows: list[Document] = []
        for doc in itertools.chain(docs, [None]):
            if doc is not None:
                rows.append(doc)
            if rows and (doc is None or len(rows) == batch):
                writer.write_table(pa.table({"id": [d.id for d in rows], "text": [d.text for d in rows],
                                             "metadata": [json.dumps(d.metadata, ensure_ascii=False) for d in rows]},
                                            schema=schema))
                rows = []


def write_curated_documents(cfg: PipelineConfig, stages: list[Stage], val_ids: set[str], out: Path) -> None:
    """The surviving documents (metadata "split": train or val) and, with output.excluded, the dropped ones
    (metadata "dropped_by", "reason"), in output.documents' format, for tools that read documents, not tokens."""
    write = write_documents if cfg.output.documents == "jsonl" else write_parquet
    suffix = ".jsonl.gz" if cfg.output.documents == "jsonl" else ".parquet"
    survivors = (Document(d.text, d.id, {**d.metadata, "split": "val" if d.id in val_ids else "train"})
                 for d in _final_documents(cfg, stages[-1].index))
    write(out / f"documents{suffix}", survivors)
    if cfg.output.excluded:
        write(out / f"excluded{suffix}", (doc for stage in stages for shard in range(cfg.run.shards)
                                          for doc in read_documents(_excluded_path(cfg, stage.index, shard))))


def run_pipeline(cfg: PipelineConfig, progress: bool = True, overwrite: bool = False, log=print) -> PreparedData:
    """Run the whole pipeline; return the prepared data directory it wrote.

    An output directory that holds an earlier output is replaced only with `overwrite`;
    see `claim_directories` for what else is refused before any work starts."""
    started = time.perf_counter()
    if cfg.output.vocab_size < MIN_VOCAB:
        raise DataError(f"output.vocab_size={cfg.output.vocab_size} is below the minimum of {MIN_VOCAB} (256 bytes + 3 special tokens)")
    steps = build_steps(cfg.steps)
    stages = plan_stages(steps)
    claim_directories(cfg, overwrite)
    _open_work_dir(cfg)
    _log_reused(cfg, stages, log)
    totals = [StepStats() for _ in steps]
    read = StepStats()
    executor = make_executor(cfg.run.executor, cfg.run.workers, cfg.run.ray_address)
    drop: frozenset[str] = frozenset()
    try:
        for stage in stages:
            tasks = [ShardTask(cfg, stage, shard, drop) for shard in range(cfg.run.shards)]
            results = executor.map(run_shard, tasks, desc=f"stage {stage.index + 1}/{len(stages)}", progress=progress)
            for result in results:
                if stage.index == 0:
                    read.merge(StepStats.from_dict(result["read"]))
                for i, s in result["stats"].items():
                    totals[i].merge(StepStats.from_dict(s))
            if stage.summarises_for is not None:
                step = steps[stage.summarises_for]
                drop = frozenset(step.resolve([r["summary"] for r in results], totals[stage.summarises_for]))
    finally:
        executor.close()
    listing = [row for r in results for row in r["listing"]]
    languages = dict(Counter(lang for _, _, _, lang in listing if lang))
    if len(listing) < 2:
        raise _too_few_survivors(cfg, listing, read, totals, languages, started)
    val_ids = choose_validation(((doc_id, size) for doc_id, size, _, _ in listing), cfg.output.val_bytes)
    before = Counter()
    for doc_id, size, domain, _ in listing:
        if doc_id not in val_ids:
            before[domain] += size
    epochs = plan_epochs(cfg.mix, dict(before))
    after = Counter()
    for doc_id, size, domain, _ in listing:
        if doc_id not in val_ids:
            after[domain] += size * repeats(doc_id, epochs.get(domain, 0.0), cfg.run.seed)

    last = stages[-1].index
    train_docs = (d for d in _final_documents(cfg, last) if d.id not in val_ids)
    tokenizer = Tokenizer.train(sample_texts(train_docs, cfg.output.tokenizer_sample_bytes), cfg.output.vocab_size)

    def mixed_train() -> Iterator[Document]:
        for doc in _final_documents(cfg, last):
            if doc.id not in val_ids:
                for _ in range(repeats(doc.id, epochs.get(doc.metadata.get("domain", "default"), 0.0), cfg.run.seed)):
                    yield doc

    val_bytes = sum(size for doc_id, size, _, _ in listing if doc_id in val_ids)
    splits = {"train": (mixed_train(), sum(after.values())),
              "val": ((d for d in _final_documents(cfg, last) if d.id in val_ids), val_bytes)}
    with atomic_dir(cfg.output.dir) as tmp:
        manifest = write_prepared(tmp, tokenizer, splits, {"pipeline": cfg.to_dict()}, started, progress)
        if cfg.output.documents:
            write_curated_documents(cfg, stages, val_ids, tmp)
        write_report(tmp, cfg, read, totals, {"before": dict(before), "after": dict(after), "epochs": epochs},
                     languages, manifest)
    log(f"wrote {cfg.output.dir}: {manifest['splits']['train']['tokens']:,} train and "
        f"{manifest['splits']['val']['tokens']:,} validation tokens; report in {Path(cfg.output.dir) / 'report.html'}")
    return PreparedData(Path(cfg.output.dir), manifest, tokenizer)
