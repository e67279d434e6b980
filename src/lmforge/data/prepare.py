"""`lmforge prepare`: corpus -> trained tokenizer -> train/val token shards + manifest.

The output directory is built aside and swapped into place whole, so an interrupted run
never leaves a half-prepared directory. A directory prepared from the same settings is
reused as is; one prepared from other settings is replaced only when asked, and a
directory lmforge did not write is never touched.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from lmforge.config import MIN_VOCAB, DataConfig, to_dict
from lmforge.data.document import Document
from lmforge.data.readers import BUILTIN_CORPORA, corpus_paths, read_corpus
from lmforge.data.shards import ShardWriter, TokenShard, token_dtype
from lmforge.data.split import choose_validation
from lmforge.errors import DataError
from lmforge.fileio import OutputKind, atomic_dir, claim_output, recover_dir, write_json
from lmforge.tokenizer import Tokenizer

MANIFEST = "manifest.json"
SPLITS = ("train", "val")
ENCODE_BATCH = 64
PREPARED = OutputKind("prepared data directory", MANIFEST, "splits", frozenset({
    MANIFEST, "tokenizer.json", "tokenizer_config.json", "report.json", "report.html",
    *(f"{name}{suffix}" for name in ("documents", "excluded") for suffix in (".jsonl.gz", ".parquet")),
    *(f"{split}{suffix}" for split in SPLITS for suffix in (".bin", ".idx.npy"))}))


@dataclass
class PreparedData:
    """A prepared data directory: tokenizer, manifest and one token shard per split."""

    dir: Path
    manifest: dict
    tokenizer: Tokenizer
    reused: bool = False  # found prepared from the same settings, not written now

    def shard(self, split: str) -> TokenShard:
        """The token shard of `split` ("train" or "val")."""
        return TokenShard(self.dir / split, self.tokenizer.vocab_size)


def _source(cfg: DataConfig) -> dict:
    """The settings that determine a prepared directory's content."""
    builtin = cfg.corpus in BUILTIN_CORPORA
    source = {k: v for k, v in to_dict(cfg).items() if k not in ("dir", "format", "packing")}  # those two: chat data
    source["corpus"] = cfg.corpus if builtin else str(Path(cfg.corpus).expanduser().resolve())
    if builtin:
        source["python"] = sys.version.split()[0]
    return source


def _documents(cfg: DataConfig, val_ids: set[str], split: str) -> Iterator[Document]:
    for doc in read_corpus(cfg.corpus, cfg.text_field):
        if doc.text and (doc.id in val_ids) == (split == "val"):
            yield doc


def sample_texts(docs: Iterable[Document], max_bytes: int) -> Iterator[str]:
    """The documents' texts until `max_bytes` of UTF-8 have passed (0: all): the tokenizer's training text."""
    seen = 0
    for doc in docs:
        yield doc.text
        seen += len(doc.text.encode("utf-8"))
        if max_bytes and seen >= max_bytes:
            return


def prepare(cfg: DataConfig, out_dir: str | Path, progress: bool = True, overwrite: bool = False) -> PreparedData:
    """Split the corpus, train the tokenizer on the train split, and write both splits as shards.

    `out_dir` must be new or empty, or hold prepared data (replaced only with `overwrite`);
    it must not be, contain or lie inside the corpus.
    """
    if cfg.vocab_size < MIN_VOCAB:
        raise DataError(f"data.vocab_size={cfg.vocab_size} is below the minimum of {MIN_VOCAB} (256 bytes + 3 special tokens)")
    out_dir = claim_output(recover_dir(out_dir), PREPARED, corpus_paths(cfg.corpus), overwrite)
    started = time.perf_counter()
    sizes = {doc.id: len(doc.text.encode("utf-8")) for doc in read_corpus(cfg.corpus, cfg.text_field)}
    if not sizes or not any(sizes.values()):
        raise DataError(f"corpus {cfg.corpus!r} has no text; check the path and data.text_field")
    val_ids = choose_validation(sizes.items(), cfg.val_bytes)
    tokenizer = Tokenizer.train(sample_texts(_documents(cfg, val_ids, "train"), cfg.tokenizer_sample_bytes), cfg.vocab_size)
    splits = {split: (_documents(cfg, val_ids, split),
                      sum(size for doc_id, size in sizes.items() if (doc_id in val_ids) == (split == "val")))
              for split in SPLITS}
    with atomic_dir(out_dir) as tmp:
        manifest = write_prepared(tmp, tokenizer, splits, _source(cfg), started, progress)
    return PreparedData(out_dir, manifest, tokenizer)


def write_prepared(
    directory: Path,
    tokenizer: Tokenizer,
    splits: dict[str, tuple[Iterable[Document], int]],
    source: dict,
    started: float,
    progress: bool = True,
) -> dict:
    """Write the tokenizer, one token shard per split (documents, their byte total for the
    progress bar) and the manifest into `directory`; return the manifest."""
    tokenizer.save(directory)
    stats = {}
    for split, (docs, split_bytes) in splits.items():
        writer = ShardWriter(directory / split, tokenizer.vocab_size)
        bar = tqdm(total=split_bytes, unit="B", unit_scale=True, desc=f"tokenize {split}", disable=not progress, leave=False)
        count, batch = 0, []
        for doc in docs:
            batch.append(doc.text)
            if len(batch) == ENCODE_BATCH:
                count += _write_batch(tokenizer, writer, batch, bar)
        count += _write_batch(tokenizer, writer, batch, bar)
        writer.close()
        bar.close()
        stats[split] = {"documents": count, "bytes": split_bytes, "tokens": writer.tokens}
    manifest = {
        "format": 1,
        "vocab_size": tokenizer.vocab_size,
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "source": source,
        "splits": stats,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(directory / MANIFEST, manifest)
    return manifest


def _write_batch(tokenizer: Tokenizer, writer: ShardWriter, texts: list[str], bar: tqdm) -> int:
    n = len(texts)
    for ids in tokenizer.encode_batch(texts):
        writer.add(ids + [tokenizer.eos_id])
    bar.update(sum(len(t.encode("utf-8")) for t in texts))
    texts.clear()
    return n


def load_prepared(data_dir: str | Path) -> PreparedData:
    """Open a directory written by `prepare`."""
    data_dir = recover_dir(data_dir)
    path = data_dir / MANIFEST
    if not path.is_file():
        raise DataError(f"{data_dir} is not a prepared data directory (no {MANIFEST}); run `lmforge prepare` first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise DataError(f"{path} is corrupt; delete {data_dir} and run `lmforge prepare` again") from None
    tokenizer = Tokenizer.load(data_dir)
    if tokenizer.vocab_size != manifest.get("vocab_size"):
        raise DataError(f"{data_dir}: tokenizer has {tokenizer.vocab_size} tokens but the manifest says {manifest.get('vocab_size')}; prepare again")
    return PreparedData(data_dir, manifest, tokenizer)


def settings_difference(saved: dict, wanted: dict) -> str | None:
    """The first data setting that differs between a manifest's source and the config's, as a phrase."""
    for key in sorted(set(saved) | set(wanted)):
        if saved.get(key) != wanted.get(key):
            return f"data.{key} is {wanted.get(key)!r} in the config but {saved.get(key)!r} in the shards"
    return None


def prepare_or_load(cfg: DataConfig, data_dir: str | Path, progress: bool = True, rebuild: bool = False) -> PreparedData:
    """Reuse `data_dir` if it was prepared from the same settings or written by a data pipeline
    (`lmforge data run`, whose config decides its content); prepare it if it is new or empty.

    Shards prepared from other settings are replaced only with `rebuild` (a run starting
    over in a directory it created); otherwise this stops and says what differs.
    """
    data_dir = recover_dir(data_dir)
    if (data_dir / MANIFEST).is_file():
        prepared = load_prepared(data_dir)
        source = prepared.manifest.get("source", {})
        difference = None if "pipeline" in source else settings_difference(source, _source(cfg))
        if difference is None:
            prepared.reused = True
            return prepared
        if not rebuild:
            raise DataError(f"{data_dir} holds shards prepared from other settings ({difference}); point data.dir "
                            f"elsewhere, or prepare it again with `lmforge prepare ... --out {data_dir} --overwrite`")
    return prepare(cfg, data_dir, progress, overwrite=rebuild)
