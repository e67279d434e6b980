"""A data pipeline config: sources, steps, mixing, output and how to execute it.

A pipeline is a TOML file:

    [[sources]]                 # one table per input; documents take the source's domain
    corpus = "stdlib"
    domain = "code"

    [[steps]]                   # applied in order; `type` names the step, the rest are its settings
    type = "code_quality"

    [[steps]]
    type = "minhash_dedup"

    [mix]                       # domain mixing of the training split (see lmforge.data.mixing)
    [output]                    # tokenizer and token shards, the format `lmforge train` reads
    [run]                       # executor, workers, shards, seed

`section.key=value` overrides apply to [mix], [output] and [run].
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lmforge.config import MAX_SEED, MIN_VOCAB, bounded, config_from_dict, read_toml, section_from_dict, to_dict
from lmforge.data.mixing import MixConfig
from lmforge.data.document import Document
from lmforge.data.steps import GlobalStep, Step, StepStats
from lmforge.errors import ConfigError

# step type -> "module:Class"; imported on use so optional dependencies load only when needed
STEP_TYPES = {
    "extract_html": "lmforge.data.extract:ExtractHTML",
    "gopher_quality": "lmforge.data.filters:GopherQuality",
    "gopher_repetition": "lmforge.data.filters:GopherRepetition",
    "fineweb_quality": "lmforge.data.filters:FineWebQuality",
    "c4_quality": "lmforge.data.filters:C4Quality",
    "code_quality": "lmforge.data.filters:CodeQuality",
    "language_id": "lmforge.data.langid:LanguageID",
    "pii": "lmforge.data.pii:RedactPII",
    "exact_dedup": "lmforge.data.dedup:ExactDedup",
    "minhash_dedup": "lmforge.data.dedup:MinHashDedup",
    "decontaminate": "lmforge.data.decontaminate:Decontaminate",
    "quality_classifier": "lmforge.data.classify:QualityClassifier",
    "tag_domain": "lmforge.data.classify:TagDomain",
}
EXECUTORS = ("local", "ray")


@dataclass
class SourceConfig:
    """One input corpus (any spec `lmforge.data.readers.read_corpus` accepts) and its domain."""

    corpus: str = "stdlib"
    domain: str = ""  # "" keeps the domain the reader sets (stdlib: code, pydoc: prose), else "default"
    text_field: str = "text"


DOCUMENT_FORMATS = ("", "jsonl", "parquet")


@dataclass
class OutputConfig:
    """Where the tokenizer and token shards go, and how they are made."""

    dir: str = "runs/data"
    vocab_size: int = bounded(8192, MIN_VOCAB)
    val_bytes: int = bounded(400_000, 0)
    tokenizer_sample_bytes: int = bounded(0, 0)  # 0: train the tokenizer on the whole (unrepeated) train split
    documents: str = ""  # also write the curated documents: "jsonl" (gzipped) or "parquet"; "" writes only token shards
    excluded: bool = False  # with documents: also write every dropped document, with the step and reason that dropped it

    def __post_init__(self) -> None:
        if self.documents not in DOCUMENT_FORMATS:
            raise ConfigError(f"output.documents={self.documents!r} is not one of {', '.join(map(repr, DOCUMENT_FORMATS))}")
        if self.excluded and not self.documents:
            raise ConfigError("output.excluded=true needs output.documents (jsonl or parquet) to choose the format")


@dataclass
class RunSection:
    """How the pipeline executes."""

    executor: str = "local"  # "local" (processes on this machine) or "ray"
    workers: int = bounded(2, 1)
    shards: int = bounded(8, 1)  # input shards: the unit of parallel work and of resuming
    seed: int = bounded(0, 0, MAX_SEED)
    ray_address: str = ""  # "" starts Ray on this machine; "auto" or "ray://HOST:10001" joins a cluster
    work_dir: str = ""  # intermediate files; "" means <output.dir>.work

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"run.executor={self.executor!r} is not one of {', '.join(EXECUTORS)}")


@dataclass
class PipelineSections:
    """The [mix], [output] and [run] tables (those that take overrides)."""

    mix: MixConfig = field(default_factory=MixConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    run: RunSection = field(default_factory=RunSection)


@dataclass
class PipelineConfig:
    """A whole pipeline: sources, step specs (type + settings), and the sections."""

    sources: list[SourceConfig]
    steps: list[dict[str, Any]]
    mix: MixConfig
    output: OutputConfig
    run: RunSection

    @property
    def work_dir(self) -> Path:
        return Path(self.run.work_dir) if self.run.work_dir else Path(f"{Path(self.output.dir)}.work")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def pipeline_config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> PipelineConfig:
    """Build and check a PipelineConfig from TOML tables plus overrides."""
    raw = dict(raw)
    sources = raw.pop("sources", [{}])
    steps = raw.pop("steps", [])
    if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
        raise ConfigError("[[sources]] must be an array of tables, each with a corpus")
    if not isinstance(steps, list) or not all(isinstance(s, dict) and "type" in s for s in steps):
        raise ConfigError("[[steps]] must be an array of tables, each with a type (e.g. type = \"gopher_quality\")")
    sections = config_from_dict(PipelineSections, raw, overrides)
    cfg = PipelineConfig(
        sources=[section_from_dict(SourceConfig, s, "sources") for s in sources],
        steps=[dict(s) for s in steps],
        **{f.name: getattr(sections, f.name) for f in dataclasses.fields(sections)},
    )
    build_steps(cfg.steps)  # unknown step types or settings fail now, not in a worker
    return cfg


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a pipeline TOML (a path, or a built-in name such as `stdlib`) and apply overrides."""
    return pipeline_config_from_dict(read_toml(path, kind="data"), overrides)


class ForDomains(Step):
    """Applies a document-by-document step only to documents of the given domains; the others
    pass unchanged (so code gets code filters and prose gets prose filters)."""

    def __init__(self, step: Step, domains: list[str]):
        self.step, self.domains, self.name = step, frozenset(domains), step.name

    def process(self, docs: Iterator[Document], stats: StepStats) -> Iterator[Document]:
        for doc in docs:
            if doc.metadata.get("domain") in self.domains:
                yield from self.step.process(iter((doc,)), stats)
            else:
                yield doc


def build_step(spec: dict[str, Any]) -> Step:
    """The Step a spec describes: `type` picks the class, `domains` (optional) limits it to
    documents of those domains, the other keys are its settings."""
    settings = {k: v for k, v in spec.items() if k not in ("type", "domains")}
    kind = spec["type"]
    if kind not in STEP_TYPES:
        raise ConfigError(f"unknown step type {kind!r}; known: {', '.join(sorted(STEP_TYPES))}")
    module, name = STEP_TYPES[kind].split(":")
    cls = getattr(importlib.import_module(module), name)
    known = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"step {kind!r} has no setting {', '.join(unknown)}; known: {', '.join(sorted(known)) or 'none'}")
    try:
        step = cls(**settings)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"step {kind!r}: {e}") from None
    if "domains" not in spec:
        return step
    domains = spec["domains"]
    if isinstance(step, GlobalStep) or not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise ConfigError(f"step {kind!r}: domains must be a list of domain names, and global steps (dedup) take none")
    return ForDomains(step, domains)


def build_steps(specs: list[dict[str, Any]]) -> list[Step]:
    """Every step of a pipeline, in order."""
    return [build_step(spec) for spec in specs]
