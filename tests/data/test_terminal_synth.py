"""Trajectory synthesis end to end (oracle teacher, resume, report), curation rules, and the CLI."""

from __future__ import annotations

import json
import os

import pytest
from test_terminal_agent import _reply

from lmforge.cli import main
from lmforge.data.terminal import sandbox
from lmforge.data.terminal.curate import Curator, looping
from lmforge.data.terminal.families import FAMILIES
from lmforge.data.terminal.synth import SynthSettings, synthesize
from lmforge.errors import ConfigError, OutputError

pytestmark = pytest.mark.skipif(not sandbox.available() and os.geteuid() != 0,
                                reason="bubblewrap is not installed (apt-get install bubblewrap)")


def _record(*assistant: str, ended: str = "complete", score: float = 1.0) -> dict:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "Task: sum the numbers"}]
    for text in assistant:
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "New terminal output:\n$ "}]
    return {"task": "t-1", "family": "f", "domain": "data_processing", "skills": ["csv-parsing"], "messages": messages,
            "ended": ended, "score": score}


def test_curation_rules():
    curator = Curator(held_out=["Compute the median household income of every county listed in the census file "
                                "and write the three largest values to top.txt one per line"])
    assert curator.reject(_record(_reply("ls\n"), _reply(complete=True))) is None
    assert curator.reject(_record(_reply("ls\n"), ended="timeout")) == "incomplete (timeout)"
    assert curator.reject(_record(_reply("ls\n"), ended="teacher_error: HTTP 500")) == "incomplete (teacher_error)"
    assert curator.reject(_record(_reply("ls\n"), score=0.5)) is None
    assert Curator([], keep_failed=False).reject(_record(_reply("ls\n"), score=0.5)) == "failed verification"
    assert curator.reject(_record("As an AI language model I cannot " + _reply("ls\n"))) == "identity leak"
    assert curator.reject(_record(_reply("ls\n"), _reply("ls\n"), _reply("ls\n"))) == "looping"
    leaked = _record(_reply("echo 'compute the median household income of every county listed in the census file "
                            "and write the three largest values'\n"))
    assert curator.reject(leaked) == "contaminated"


def test_looping_needs_identical_non_empty_commands_in_a_row():
    msgs = _record(_reply("ls\n"), _reply("pwd\n"), _reply("ls\n"), _reply(), _reply(), _reply())["messages"]
    assert not looping(msgs)
    assert looping(_record(_reply("a\n"), _reply("b\n"), _reply("b\n"), _reply("b\n"))["messages"])


def test_synthesize_with_the_oracle_resumes_and_reports(tmp_path):
    families = sorted(FAMILIES)[:4]  # every family's oracle is checked by its verifier test; here the loop and resume
    count = len(families)
    settings = SynthSettings(tasks=count, families=families, shard_size=2)
    report = synthesize(tmp_path / "out", settings, workers=1, progress=False)
    assert report["overall"] == {"trajectories": count, "mean_score": 1.0, "pass_rate": 1.0}
    assert report["ended"] == {"complete": count} and report["kept"] == count and report["malformed_turns"] == 0
    assert set(report["by_domain"]) == {FAMILIES[f].domain for f in families}
    conversations = [json.loads(line) for line in (tmp_path / "out" / "conversations.jsonl").read_text().splitlines()]
    assert len(conversations) == count and conversations[0]["messages"][0]["role"] == "system"
    shards = sorted((tmp_path / "out" / "trajectories").iterdir())
    stamps = [p.stat().st_mtime_ns for p in shards]
    shards[-1].unlink()  # as if the run had been stopped before its last shard
    assert synthesize(tmp_path / "out", settings, workers=1, progress=False)["overall"]["trajectories"] == count
    assert [p.stat().st_mtime_ns for p in shards[:-1]] == stamps[:-1]
    with pytest.raises(OutputError, match="pass --overwrite"):
        synthesize(tmp_path / "out", SynthSettings(tasks=count, families=families, seed=1), workers=1, progress=False)


def test_synth_settings_are_checked():
    with pytest.raises(ConfigError, match="oracle' or an http"):
        SynthSettings(teacher="gpt-4")
    with pytest.raises(ConfigError, match="needs --model"):
        SynthSettings(teacher="http://127.0.0.1:8000/v1")


def test_cli_generates_checks_exports_and_imports_tasks(tmp_path, capsys):
    family = sorted(FAMILIES)[0]
    assert main(["data", "tasks", "--count", "2", "--families", family, "--out", str(tmp_path / "t.jsonl"),
                 "--check", "--workers", "1", "--no-progress"]) == 0
    assert "verifiers sound: 2/2" in capsys.readouterr().out
    assert main(["data", "tasks", "--count", "2", "--families", family, "--format", "terminal-bench",
                 "--out", str(tmp_path / "tb")]) == 0
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == sorted(
        [f"{family}-train-0-00000", f"{family}-train-0-00001", "lmforge-tasks.json"])
    assert main(["data", "tasks", "--from", str(tmp_path / "tb"), "--out", str(tmp_path / "back.jsonl")]) == 0
    assert (tmp_path / "back.jsonl").read_text().count("\n") == 2
    assert main(["data", "tasks", "--count", "2", "--out", str(tmp_path / "t.jsonl")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["data", "tasks", "--families", "no-such-family", "--out", str(tmp_path / "u.jsonl")]) == 2
    assert "unknown task families no-such-family" in capsys.readouterr().err
    assert main(["data", "synth", "terminal", "--teacher", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "s")]) == 2
    assert "needs --model" in capsys.readouterr().err
