"""Dataclass configs: TOML files plus `section.key=value` overrides from the command line.

A run config has three sections, `[model]`, `[data]` and `[train]`. Every field has a
default that works; unknown keys and values of the wrong type are errors that name the key.
Every numeric field declares its valid range next to it (`bounded`), and the parser
refuses a value outside it, or a NaN or infinity, naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN_CONFIG_DIR = Path(__file__).parent / "configs"
MIN_VOCAB = 256 + 3  # the byte alphabet plus the special tokens
MAX_SEED = 2**63 - 1  # seeds are 64-bit signed integers, as TOML integers are


@dataclass(frozen=True)
class Range:
    """The valid interval of a numeric setting; a bound of None is no bound."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: `low` itself is excluded
    high_open: bool = False

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"{'<' if self.high_open else '<='} {self.high}" if self.high is not None else "finite"

    def problem(self, value: float) -> str | None:
        """Why `value` is not valid ("must be > 0, got -1.0"), or None when it is: it must be finite and inside."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return f"must be {self}, got {value}" if below or above else None


def bounded(default: Any = dataclasses.MISSING, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, **field_args: Any) -> Any:
    """A dataclass field whose values (a table's: each value) must lie in the given range;
    None is always allowed. `field_args` go to `dataclasses.field` (e.g. default_factory)."""
    return field(default=default, metadata={"range": Range(low, high, low_open, high_open)}, **field_args)


def field_range(cls: type, name: str) -> Range:
    """The range declared for field `name` of dataclass `cls` (unbounded, finite, if none)."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("range", Range())


def range_error(cls: type, values: dict[str, Any], prefix: str = "") -> str | None:
    """The first of `values` (field name -> value for dataclass `cls`; a table's entries each
    count) outside its declared range, as "<prefix><key> must be ..., got v"; None when all are valid."""
    for f in dataclasses.fields(cls):
        value = values.get(f.name)
        entries = value.items() if isinstance(value, dict) else [("", value)]
        for sub, v in entries:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                problem = f.metadata.get("range", Range()).problem(v)
                if problem:
                    return f"{prefix}{f.name}{'.' if sub else ''}{sub} {problem}"
    return None


def check_ranges(obj: Any, prefix: str = "", error: type[Exception] = ConfigError) -> None:
    """Raise `error` naming the first field of dataclass instance `obj` outside its declared range.

    Config dataclasses call it first thing in `__post_init__`, so a config built in code (from
    a Hugging Face or GGUF header) is checked like one parsed from TOML."""
    problem = range_error(type(obj), vars(obj), prefix)
    if problem:
        raise error(problem)


LINEAR_VARIANTS = ("authors", "lmforge")  # model.linear_variant: see lmforge.model.mixers.linear


@dataclass
class ModelConfig:
    """Shape of the one model (a Llama-family decoder; mixers chosen per layer)."""

    vocab_size: int | None = bounded(None, 1)  # None: taken from the tokenizer
    d_model: int = bounded(256, 1)
    n_layers: int = bounded(4, 1)
    n_heads: int = bounded(4, 1)
    n_kv_heads: int | None = bounded(None, 1)  # None: n_heads (no grouping)
    head_dim: int | None = bounded(None, 1)  # None: d_model // n_heads
    d_ff: int | None = bounded(None, 1)  # None: 8/3 d_model rounded up to a multiple of 32
    mixers: list[str] = field(default_factory=lambda: ["softmax"])  # repeats to n_layers
    rope_theta: float = bounded(10000.0, 0, low_open=True)
    norm_eps: float = bounded(1e-5, 0, low_open=True)
    tie_embeddings: bool = True
    attention_bias: bool = False  # biases on q/k/v projections (Qwen2)
    linear_chunk_size: int = bounded(64, 1)  # chunk length of the chunked linear-attention path (first order)
    second_order_chunk_size: int = bounded(256, 1)  # 2Mamba's chunk length: its feature maps are costly, so fewer, longer chunks
    linear_variant: str = "authors"  # Mamba-2S/2Mamba/2Mamba-E: "authors" (as 2Mamba2Furious configures them) or "lmforge" (output RMSNorm and decay bias on all)
    mamba2_state: int = bounded(64, 1)  # Mamba-2 baseline: state size N per head
    mamba2_expand: int = bounded(2, 1)  # Mamba-2 baseline: inner width / d_model
    sparse_block_q: int = bounded(64, 1)  # sparse mixer: query block length
    sparse_block_k: int = bounded(64, 1)  # sparse mixer: key block length
    sparse_top_k: float = bounded(0.03, 0, 1, low_open=True)  # sparse mixer: keep at least this fraction of visible key blocks
    sparse_top_p: float = bounded(0.2, 0, 1, low_open=True)  # sparse mixer: ... and the blocks holding this much pooled attention mass
    sparse_sink: bool = True  # sparse mixer: always keep the first key block
    sparse_kernel: str = "auto"  # "gather", "flex" (compiled FlexAttention; forward-only on CPU), or "auto"
    max_seq_len: int = bounded(2048, 1)
    init_std: float = bounded(0.02, 0, low_open=True)

    def __post_init__(self) -> None:
        check_ranges(self, "model.")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ConfigError(
                    f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                    "change one of them or set model.head_dim"
                )
            self.head_dim = self.d_model // self.n_heads
        if self.d_ff is None:
            self.d_ff = -(-8 * self.d_model // 3 // 32) * 32
        if self.head_dim % 2:
            raise ConfigError(f"model.head_dim={self.head_dim} must be even (RoPE rotates pairs of dimensions)")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"model.n_heads={self.n_heads} must be a multiple of model.n_kv_heads={self.n_kv_heads}"
            )
        if self.linear_variant not in LINEAR_VARIANTS:
            raise ConfigError(f"model.linear_variant must be {' or '.join(LINEAR_VARIANTS)}, got {self.linear_variant!r}")
        if self.sparse_kernel not in ("auto", "gather", "flex"):
            raise ConfigError(f"model.sparse_kernel must be auto, gather or flex, got {self.sparse_kernel!r}")
        if not self.mixers:
            raise ConfigError("model.mixers is empty; give at least one mixer name, e.g. [\"softmax\"]")

    def mixer_for(self, layer: int) -> str:
        """Mixer name of `layer`: the `mixers` list repeated to n_layers."""
        return self.mixers[layer % len(self.mixers)]


@dataclass
class DataConfig:
    """Where training text comes from and how it is tokenized."""

    corpus: str = "stdlib"  # "stdlib", a directory, a glob, a .jsonl(.gz) or .parquet file
    text_field: str = "text"  # field holding the text in .jsonl / .parquet records
    vocab_size: int = bounded(8192, MIN_VOCAB)
    val_bytes: int = bounded(400_000, 0)  # validation split size, chosen by a hash of each document id
    tokenizer_sample_bytes: int = bounded(0, 0)  # 0: train the tokenizer on the whole train split
    dir: str = ""  # prepared shards; "" means <train.out>/data
    format: str = "text"  # "text" (a corpus, prepared into token shards) or "chat" (corpus: a .jsonl of {"messages": [...]})
    packing: str = "none"  # chat: "none" (one conversation per row, padded) or "packed" (windows cut across conversations)

    def __post_init__(self) -> None:
        if self.format not in ("text", "chat"):
            raise ConfigError(f"data.format must be 'text' or 'chat', got {self.format!r}")
        if self.packing not in ("none", "packed"):
            raise ConfigError(f"data.packing must be 'none' or 'packed', got {self.packing!r}")

# Each optimizer's default rate for the hidden matrices: the rate benchmarks/optimizers.py's sweep chose on
# a validation split (BENCHMARKS.md, "Optimizers"); None: AdamW takes `lr` for every parameter, as is usual.
MATRIX_LR = {"namo": 8e-3, "namo_d": 8e-3, "muon": 4e-3, "adamw": None}


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, evaluation and checkpointing of a training run."""

    out: str = "runs/train"
    seed: int = bounded(0, 0, MAX_SEED)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # "auto" (bf16 where supported), "bf16", "fp32"
    compile: bool = False
    seq_len: int = bounded(256, 1)
    batch_size: int = bounded(16, 1)
    grad_accum: int = bounded(1, 1)
    steps: int = bounded(1000, 1)
    time_budget: float = bounded(0.0, 0)  # seconds of training (0: none); with one, steps is a cap and the schedule runs on time
    optimizer: str = "namo"  # the hidden matrices' optimizer: "namo", "namo_d", "muon" or "adamw"
    lr: float = bounded(3e-3, 0, low_open=True)  # AdamW's rate for embeddings, head, gains and biases
    matrix_lr: float | None = bounded(None, 0, low_open=True)  # hidden matrices' rate; None: MATRIX_LR[optimizer]
    matrix_momentum: float = bounded(0.95, 0, 1, high_open=True)  # Muon's beta / NAMO's mu1
    matrix_beta2: float = bounded(0.99, 0, 1, high_open=True)  # NAMO's mu2
    matrix_eps: float = bounded(1e-8, 0, low_open=True)  # NAMO's eps
    muon_scale: str = "match_rms_adamw"  # or "original"
    namo_d_clamp: float = bounded(0.75, 0, 1, low_open=True)  # NAMO-D's c in (0, 1]
    ns_steps: int = bounded(5, 1)  # Newton-Schulz iterations
    min_lr_ratio: float = bounded(0.0, 0, 1)
    schedule: str = "wsd"  # "wsd" (warmup-stable-decay) or "cosine"
    warmup_steps: int = bounded(50, 0)
    decay_fraction: float = bounded(0.3, 0, 1)  # wsd: share of the run (steps or time budget) spent decaying
    weight_decay: float = bounded(0.1, 0)
    beta1: float = bounded(0.9, 0, 1, high_open=True)
    beta2: float = bounded(0.95, 0, 1, high_open=True)
    grad_clip: float = bounded(1.0, 0)  # 0: no clipping
    log_every: int = bounded(10, 1)
    eval_every: int = bounded(200, 0)  # 0: only the final evaluation
    eval_tokens: int = bounded(65536, 1)  # tokens of the val split used by periodic evaluation
    ckpt_every: int = bounded(0, 0)  # 0: only at the end (and on Ctrl-C)
    recompute: str = "none"  # "mixers" or "blocks": keep only their inputs for the backward, recompute the rest
    init_from: str = ""  # start from this model (pulled name, .gguf, HF directory, checkpoint): its shape and tokenizer

    @property
    def matrix_rate(self) -> float:
        """The hidden matrices' rate: `matrix_lr` when set, else the optimizer's measured default (`lr` for AdamW)."""
        if self.matrix_lr is not None:
            return self.matrix_lr
        return MATRIX_LR[self.optimizer] or self.lr

    def __post_init__(self) -> None:
        check_ranges(self, "train.")
        if self.schedule not in ("wsd", "cosine"):
            raise ConfigError(f"train.schedule must be 'wsd' or 'cosine', got {self.schedule!r}")
        if self.optimizer not in MATRIX_LR:
            raise ConfigError(f"train.optimizer must be namo, namo_d, muon or adamw, got {self.optimizer!r}")
        if self.muon_scale not in ("original", "match_rms_adamw"):
            raise ConfigError(f"train.muon_scale must be 'original' or 'match_rms_adamw', got {self.muon_scale!r}")
        if self.recompute not in ("none", "mixers", "blocks"):
            raise ConfigError(f"train.recompute must be 'none', 'mixers' or 'blocks', got {self.recompute!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"train.precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")


@dataclass
class ParallelConfig:
    """How a run launched with torchrun splits its work over the ranks (one process: nothing to split).

    Ranks = dp x cp: each of the dp data-parallel groups takes its rows of every batch, and within a group each
    of the cp context-parallel ranks takes seq_len / cp consecutive tokens of those rows."""

    dp: int = bounded(0, 0)  # data-parallel ranks; 0: every rank of the launch over cp
    cp: int = bounded(1, 1)  # context-parallel ranks per data-parallel group
    cp_attention: str = "ulysses"  # "ulysses" (every head at once) or "upipe" (Untied Ulysses: stages of heads)
    upipe_heads: int = bounded(0, 0)  # heads per UPipe stage; 0: cp (one per rank)
    fsdp: bool = False  # shard parameters, gradients and optimizer state over the ranks (FSDP2) instead of DDP

    def __post_init__(self) -> None:
        check_ranges(self, "parallel.")
        if self.cp_attention not in ("ulysses", "upipe"):
            raise ConfigError(f"parallel.cp_attention must be 'ulysses' or 'upipe', got {self.cp_attention!r}")

    @property
    def stage_heads(self) -> int:
        """Heads per attention stage under context parallelism (0: all at once)."""
        return (self.upipe_heads or self.cp) if self.cp_attention == "upipe" else 0

    def resolve(self, world_size: int) -> ParallelConfig:
        """The layout for `world_size` ranks, or an error saying how to make the two agree."""
        if world_size % self.cp:
            raise ConfigError(f"parallel.cp={self.cp} does not divide the {world_size} ranks torchrun started; launch "
                              f"a multiple of {self.cp} ranks (torchrun --nproc-per-node {self.cp})")
        dp = self.dp or world_size // self.cp
        if dp * self.cp != world_size:
            raise ConfigError(f"parallel.dp={dp} x parallel.cp={self.cp} is {dp * self.cp} ranks but torchrun started "
                              f"{world_size}; make dp x cp equal the ranks (or leave parallel.dp unset)")
        return dataclasses.replace(self, dp=dp)


@dataclass
class RunConfig:
    """A whole training run: model shape, data, training settings and how they split over ranks."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def data_dir(self) -> Path:
        """Directory of the prepared token shards for this run."""
        return Path(self.data.dir) if self.data.dir else Path(self.train.out) / "data"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotated type `tp` (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return {_coerce(k, key_tp, key): _coerce(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            value = [value]
        return [_coerce(v, item_tp, key) for v in value]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return value


def section_from_dict(cls: type, values: dict[str, Any], section: str) -> Any:
    """One config dataclass from a dict; unknown keys, wrong types and values outside a field's
    declared range (see `bounded`) are errors naming the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key '{section}.{key}'; known keys: {', '.join(sorted(names))}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    problem = range_error(cls, kwargs, f"{section}.")
    if problem:
        raise ConfigError(problem)
    return cls(**kwargs)


def parse_override_value(text: str) -> Any:
    """Parse the value of a `key=value` override as TOML (numbers, bools, lists), else a string.

    A bracketed list of bare words, `[2mamba,softmax]`, is a list of strings (no shell quoting needed).
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if text.startswith("[") and text.endswith("]"):
            return [item.strip().strip("'\"") for item in text[1:-1].split(",") if item.strip()]
        return text


def _section_of(key: str, pair: str, root: type) -> str:
    """The section of `root` holding a bare key such as `optimizer` (it must be in exactly one)."""
    hints = typing.get_type_hints(root)
    owners = [s for s, cls in hints.items() if dataclasses.is_dataclass(cls) and key in {f.name for f in dataclasses.fields(cls)}]
    if len(owners) != 1:
        where = f"it is in {' and '.join(owners)}" if owners else "no section has it"
        raise ConfigError(f"override {pair!r}: give the key as section.key ({where})")
    return owners[0]


def _sections(root: type) -> dict[str, type]:
    """The table sections of a root config: its fields whose type is a dataclass."""
    return {name: tp for name, tp in typing.get_type_hints(root).items() if dataclasses.is_dataclass(tp)}


def parse_overrides(pairs: list[str], root: type | None = None) -> dict[str, dict[str, Any]]:
    """Turn ["train.lr=1e-3", "optimizer=namo", ...] into {"train": {"lr": 0.001, "optimizer": "namo"}}.

    Sections are those of `root` (default: RunConfig). A bare key is accepted when exactly
    one section has it.
    """
    root = root or RunConfig
    out: dict[str, dict[str, Any]] = {}
    sections = set(_sections(root))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r} is not of the form section.key=value (e.g. train.lr=1e-3)")
        key = key.strip()
        section, dot, name = key.partition(".")
        if not dot:
            section, name = _section_of(key, pair, root), key
        elif not name:
            raise ConfigError(f"override {pair!r} is not of the form section.key=value (e.g. train.lr=1e-3)")
        if section not in sections:
            raise ConfigError(f"unknown config section '{section}' in {pair!r}; known: {', '.join(sorted(sections))}")
        out.setdefault(section, {})[name] = parse_override_value(value.strip())
    return out


def resolve_config_path(path: str | Path, kind: str = "") -> Path:
    """A config path, or the name of a built-in config (e.g. `quickstart`; `stdlib` for kind "data")."""
    p = Path(path)
    if p.is_file():
        return p
    builtin_dir = BUILTIN_CONFIG_DIR / kind
    builtin = builtin_dir / f"{p.name.removesuffix('.toml')}.toml"
    if builtin.is_file():
        return builtin
    known = ", ".join(sorted(q.stem for q in builtin_dir.glob("*.toml")))
    raise ConfigError(f"config file {str(path)!r} not found (built-in configs: {known})")


def read_toml(path: str | Path, kind: str = "") -> dict[str, Any]:
    """The tables of a TOML config file (or built-in config name); syntax errors name the file."""
    p = resolve_config_path(path, kind)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML ({e}); fix the file's syntax") from None


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML run config (or the defaults when `path` is None) and apply overrides."""
    return run_config_from_dict(read_toml(path) if path is not None else {}, overrides)


def config_from_dict(root: type, raw: dict[str, Any], overrides: list[str] | None = None) -> Any:
    """Build the dataclass `root` from its sections as nested dicts (TOML, JSON) plus overrides."""
    sections = _sections(root)
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a table of sections ({', '.join(sorted(sections))}), got a {type(raw).__name__}")
    merged: dict[str, dict[str, Any]] = {}
    for name, values in raw.items():
        if name not in sections:
            raise ConfigError(f"unknown config section [{name}]; known: {', '.join(sorted(sections))}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] must be a table of key = value lines")
        merged[name] = dict(values)
    for name, values in parse_overrides(overrides or [], root).items():
        merged.setdefault(name, {}).update(values)
    return root(**{name: section_from_dict(cls, merged.get(name, {}), name) for name, cls in sections.items()})


def run_config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """Build a RunConfig from nested dicts (as in TOML or config.json) plus overrides."""
    return config_from_dict(RunConfig, raw, overrides)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts (for JSON)."""
    return dataclasses.asdict(cfg)
