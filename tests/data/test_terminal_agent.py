"""The Terminus agent loop: protocol parsing, malformed replies, time limits, teachers over HTTP and the oracle."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from helpers import ServerThread, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from test_terminal_sandbox import _task

from lmforge.data.terminal import sandbox
from lmforge.data.terminal.agent import (
    OpenAITeacher,
    OracleTeacher,
    ProtocolError,
    parse_turn,
    run_episode,
)

pytestmark = pytest.mark.skipif(not sandbox.available() and os.geteuid() != 0,
                                reason="bubblewrap is not installed (apt-get install bubblewrap)")


def _reply(*keystrokes: str, complete: bool = False, duration: float = 2.0) -> str:
    return json.dumps({"analysis": "a", "plan": "p", "task_complete": complete,
                       "commands": [{"keystrokes": k, "duration": duration} for k in keystrokes]})


class Scripted:
    """A teacher that answers from a list, repeating the last answer."""

    def __init__(self, *replies: str):
        self.replies = list(replies)
        self.seen: list[list[dict]] = []

    def describe(self) -> dict:
        return {"kind": "scripted"}

    def respond(self, messages):
        self.seen.append(list(messages))
        return self.replies[min(len(self.seen), len(self.replies)) - 1]


def test_parse_turn_accepts_fenced_json_and_rejects_what_is_malformed():
    turn = parse_turn("Sure!\n```json\n" + _reply("ls\n", complete=True) + "\n```")
    assert turn.commands[0].keystrokes == "ls\n" and turn.task_complete
    assert parse_turn(_reply("x", duration=1e9)).commands[0].duration == 60.0
    for bad, message in [("no json", "no JSON object"), ("{'a': 1}", "does not parse"),
                         ('{"analysis": "", "plan": ""}', "missing required field"),
                         ('{"analysis": "", "plan": "", "commands": "ls"}', "must be a list"),
                         ('{"analysis": "", "plan": "", "commands": [{"keystrokes": 3}]}', "must be an object"),
                         ('{"analysis": "", "plan": "", "commands": [{"keystrokes": "ls", "duration": -1}]}', "non-negative"),
                         ('{"analysis": "", "plan": "", "commands": [], "task_complete": "yes"}', "true or false")]:
        with pytest.raises(ProtocolError, match=message):
            parse_turn(bad)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_parse_turn_raises_nothing_but_protocol_errors(text):
    try:
        parse_turn(text)
    except ProtocolError:
        pass


def test_malformed_replies_are_answered_counted_and_completion_is_confirmed():
    teacher = Scripted("I think we should list files", '{"analysis": 1,}',
                       _reply("python3 -c 'print(1+2+3)' > out.txt\n"), _reply(complete=True), _reply(complete=True))
    episode = run_episode(_task(), teacher)
    assert (episode.malformed, episode.ended, episode.score, episode.turns) == (2, "complete", 1.0, 5)
    errors = [m["content"] for m in episode.messages if m["content"].startswith("Your previous response had a format error")]
    assert len(errors) == 2 and "no JSON object" in errors[0] and "does not parse" in errors[1]
    assert "Are you sure the task is complete?" in episode.messages[-2]["content"]


def test_a_declined_confirmation_goes_on_and_a_wrong_answer_scores_partially():
    teacher = Scripted(_reply("echo 5 > out.txt\n", complete=True), _reply("cat out.txt\n"), _reply(complete=True),
                       _reply(complete=True))
    episode = run_episode(_task(), teacher)
    assert episode.ended == "complete" and episode.turns == 4 and episode.score == 0.25
    assert "New terminal output:\n5\n$ " in [m["content"] for m in episode.messages]


def test_the_agent_timeout_ends_a_command_that_never_returns():
    episode = run_episode(_task(agent_timeout=2.0), Scripted(_reply("sleep 1000\n", duration=60)))
    assert episode.ended == "timeout" and episode.seconds < 10 and episode.score == 0.0


def test_max_turns_and_an_exited_shell_end_the_episode():
    assert run_episode(_task(), Scripted(_reply("true\n")), max_turns=3).ended == "max_turns"
    assert run_episode(_task(), Scripted(_reply("exit\n"))).ended == "shell_exited"


def test_a_disk_filling_agent_is_stopped_and_the_reason_recorded():
    limits = sandbox.Limits(disk_bytes=8 << 20, file_bytes=4 << 20)
    episode = run_episode(_task(), Scripted(_reply("for i in $(seq 100); do head -c 4000000 /dev/zero > f$i; done\n",
                                                   duration=20)), limits=limits)
    assert episode.ended == "sandbox: disk quota exceeded: the sandbox was stopped"


def test_oracle_trajectories_solve_the_task():
    task = _task()
    episode = run_episode(task, OracleTeacher(task))
    assert (episode.ended, episode.score, episode.malformed) == ("complete", 1.0, 0)
    assert [m["role"] for m in episode.messages] == ["system", "user"] + ["assistant", "user"] * 3 + ["assistant"]


def test_an_unreachable_teacher_ends_the_episode_without_failing():
    episode = run_episode(_task(), OpenAITeacher("http://127.0.0.1:9/v1", "none", timeout=2))
    assert episode.ended.startswith("teacher_error: cannot reach") and episode.turns == 0


def test_lmforge_own_server_as_the_teacher(tokenizer):
    from lmforge.serve.engine import EngineConfig, LLMEngine
    from lmforge.serve.server import OpenAIServer

    model = tiny_model(tokenizer.vocab_size, max_seq_len=1024)
    engine = LLMEngine(model, tokenizer, EngineConfig(max_num_seqs=2, dtype=torch.float32, block_size=16))
    with ServerThread(OpenAIServer(engine, "tiny", "key")) as server:
        teacher = OpenAITeacher(f"{server.url}/v1", "tiny", api_key="key", max_tokens=16)
        episode = run_episode(_task(), teacher, max_turns=2)
    assert episode.turns == 2 and episode.ended == "max_turns"
    assert episode.malformed == 2  # an untrained model's words are not the protocol, and that is not fatal


def test_the_time_limit_can_leave_the_models_time_out():
    class Slow(Scripted):
        def respond(self, messages):
            time.sleep(1.5)
            return super().respond(messages)

    replies = [_reply("echo one\n", duration=0.1), _reply("echo two\n", duration=0.1)]
    counted = run_episode(_task(agent_timeout=1.0), Slow(*replies), max_turns=2)
    assert counted.ended == "timeout" and counted.turns == 1
    left_out = run_episode(_task(agent_timeout=1.0), Slow(*replies), max_turns=2, count_model_time=False)
    assert left_out.ended == "max_turns" and left_out.turns == 2
