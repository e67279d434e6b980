"""Commands never destroy what they did not create: every output path goes through `claim_output`."""

import json
import os
from pathlib import Path

import pytest
from helpers import tiny_model, write_corpus

from lmforge.checkpoint import CHECKPOINT_OUTPUT, save_checkpoint
from lmforge.cli import main
from lmforge.config import RunConfig
from lmforge.errors import OutputError
from lmforge.fileio import OutputKind, atomic_dir, atomic_path, claim_output

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.max_seq_len=64", "data.vocab_size=300",
        "data.val_bytes=8000", "train.seq_len=32", "train.batch_size=4", "train.steps=2", "train.warmup_steps=1",
        "train.eval_every=0", "train.eval_tokens=256", "train.log_every=1", "train.precision=fp32", "train.compile=false",
        "--no-progress"]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes (directories as empty markers)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))}


def run(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_refused(capsys, root: Path, args, message: str) -> None:
    before = snapshot(root)
    code, err = run(capsys, *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert snapshot(root) == before


KIND = OutputKind("test directory", "manifest.json", "made", frozenset({"manifest.json", "part*"}))


def make_ours(path: Path) -> None:
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"made": 1}))
    (path / "part0").write_text("x")


def test_claim_output_rule(tmp_path):
    assert claim_output(tmp_path / "new", KIND) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    claim_output(tmp_path / "empty", KIND)
    make_ours(tmp_path / "ours")
    with pytest.raises(OutputError, match="--overwrite"):
        claim_output(tmp_path / "ours", KIND)
    claim_output(tmp_path / "ours", KIND, overwrite=True)
    (tmp_path / "ours" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        claim_output(tmp_path / "ours", KIND, overwrite=True)
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(OutputError, match="is a file"):
        claim_output(tmp_path / "afile", KIND, overwrite=True)
    with pytest.raises(OutputError, match="not a writable directory"):
        claim_output(tmp_path / "afile" / "out", KIND)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for out, relation in ((corpus, "is the input"), (corpus / "out", "is inside the input"), (tmp_path, "contains the input")):
        with pytest.raises(OutputError, match=relation):
            claim_output(out, KIND, inputs=[corpus])


def test_claim_output_file_kind(tmp_path):
    kind = OutputKind("test file", magic=b"MAGIC")
    (tmp_path / "theirs.bin").write_bytes(b"not ours")
    with pytest.raises(OutputError, match="did not write"):
        claim_output(tmp_path / "theirs.bin", kind, overwrite=True)
    (tmp_path / "ours.bin").write_bytes(b"MAGIC and more")
    with pytest.raises(OutputError, match="--overwrite"):
        claim_output(tmp_path / "ours.bin", kind)
    claim_output(tmp_path / "ours.bin", kind, overwrite=True)
    (tmp_path / "adir").mkdir()
    with pytest.raises(OutputError, match="not a file"):
        claim_output(tmp_path / "adir", kind, overwrite=True)


def test_killed_writers_temporaries_are_removed(tmp_path):
    dead_pid = 2**22 + 12345  # above the kernel's pid limit: no such process
    stale_dir = tmp_path / f".out.{dead_pid}.abc.tmp"
    stale_dir.mkdir()
    (stale_dir / "half").write_text("x")
    stale_file = tmp_path / f".f.txt.{dead_pid}.abc.tmp"
    stale_file.write_text("x")
    live = tmp_path / f".out.{os.getppid()}.abc.tmp"  # a live writer's temporary stays
    live.mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "done").write_text("y")
    with atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("z")
    assert not stale_dir.exists() and not stale_file.exists() and live.exists()
    assert (tmp_path / "out" / "done").read_text() == "y" and (tmp_path / "f.txt").read_text() == "z"


def test_os_refusal_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        with atomic_path(tmp_path / "afile" / "sub" / "x.txt"):
            pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    write_corpus(root / "corpus", n_docs=20, seed=3)
    write_corpus(root / "other", n_docs=20, seed=4)
    return root


def test_prepare_and_train_never_overwrite_their_input(corpus, capsys):
    c = corpus / "corpus"
    assert_refused(capsys, corpus, ["prepare", f"data.corpus={c}", "--out", c, *TINY], "is the input")
    assert_refused(capsys, corpus, ["prepare", f"data.corpus={c}", "--out", c / "shards", *TINY], "inside the input")
    assert_refused(capsys, corpus, ["prepare", f"data.corpus={c / '*.txt'}", "--out", c / "shards", *TINY],
                   "inside the input")
    assert_refused(capsys, corpus, ["train", "quickstart", f"data.corpus={c}", f"data.dir={c}",
                                    f"train.out={corpus / 'run'}", *TINY], "is the input")


def test_prepare_reuses_refuses_and_overwrites(corpus, tmp_path, capsys):
    out = tmp_path / "data"
    args = ["prepare", f"data.corpus={corpus / 'corpus'}", "--out", out, *TINY]
    assert run(capsys, *args)[0] == 0
    first = snapshot(out)
    capsys.readouterr()
    assert main([str(a) for a in args]) == 0
    assert "reusing" in capsys.readouterr().out and snapshot(out) == first
    assert_refused(capsys, tmp_path, [*args, "data.vocab_size=280"], "--overwrite")
    assert run(capsys, *args, "data.vocab_size=280", "--overwrite")[0] == 0
    assert json.loads((out / "manifest.json").read_text())["vocab_size"] == 280
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    assert_refused(capsys, tmp_path, ["prepare", f"data.corpus={corpus / 'corpus'}", "--out", tmp_path / "mine",
                                      "--overwrite", *TINY], "thesis.tex")


def test_train_never_rebuilds_shards_it_did_not_make(corpus, tmp_path, capsys):
    shards = tmp_path / "shards"
    assert run(capsys, "prepare", f"data.corpus={corpus / 'other'}", "--out", shards, *TINY)[0] == 0
    # the config names another corpus: the user's shards stay, and the message says what differs
    assert_refused(capsys, tmp_path, ["train", "quickstart", f"data.corpus={corpus / 'corpus'}", f"data.dir={shards}",
                                      f"train.out={tmp_path / 'run'}", "--overwrite", *TINY], "data.corpus")
    # the run's own data directory (data.dir unset) is rebuilt when the run starts over
    run_dir = tmp_path / "run2"
    common = ["train", "quickstart", f"data.corpus={corpus / 'corpus'}", f"train.out={run_dir}", *TINY]
    assert run(capsys, *common)[0] == 0
    assert run(capsys, *common, "data.vocab_size=280", "--overwrite")[0] == 0
    assert json.loads((run_dir / "data" / "manifest.json").read_text())["vocab_size"] == 280


def test_resume_of_a_finished_run_changes_nothing(corpus, tmp_path, capsys):
    common = ["train", "quickstart", f"data.corpus={corpus / 'corpus'}", f"train.out={tmp_path / 'run'}", *TINY]
    assert run(capsys, *common)[0] == 0
    assert_refused(capsys, tmp_path, [*common, "--resume"], "already finished")
    assert_refused(capsys, tmp_path, [*common, "--resume", "train.steps=3", "model.d_model=64"], "model.d_model")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model", model, RunConfig(model=model.cfg), tokenizer)


def test_quantize_and_export_never_replace_foreign_files(checkpoint, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("keep me")
    (tmp_path / "file.bin").write_bytes(b"\x00keep")
    (tmp_path / "old.gguf").write_bytes(b"not a gguf file")
    q = ["quantize", checkpoint, "--method", "rtn", "--bits", "8", "--no-progress"]
    assert_refused(capsys, tmp_path, [*q, "--out", tmp_path / "mine", "--overwrite"], "notes.md")
    assert_refused(capsys, tmp_path, [*q, "--out", tmp_path / "file.bin"], "is a file")
    assert_refused(capsys, tmp_path, [*q, "--out", checkpoint / "int8"], "inside the input")
    assert_refused(capsys, tmp_path, ["export", checkpoint, "--format", "hf", "--out", tmp_path / "mine", "--overwrite"],
                   "notes.md")
    assert_refused(capsys, tmp_path, ["export", checkpoint, "--format", "gguf", "--out", tmp_path / "old.gguf",
                                      "--overwrite"], "did not write")
    assert run(capsys, *q, "--out", tmp_path / "int8")[0] == 0
    assert_refused(capsys, tmp_path, [*q, "--out", tmp_path / "int8"], "--overwrite")
    assert run(capsys, *q, "--out", tmp_path / "int8", "--overwrite")[0] == 0
    assert CHECKPOINT_OUTPUT.foreign_entry(tmp_path / "int8") is None
    gguf = tmp_path / "model.gguf"
    assert run(capsys, "export", checkpoint, "--format", "gguf", "--out", gguf)[0] == 0
    assert_refused(capsys, tmp_path, ["export", checkpoint, "--format", "gguf", "--out", gguf], "--overwrite")
    assert run(capsys, "export", checkpoint, "--format", "gguf", "--out", gguf, "--overwrite")[0] == 0
