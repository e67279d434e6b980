"""The agent loop: a model drives a sandboxed terminal through the Terminus protocol until it declares the
task complete, runs out of turns or time, or the sandbox stops it; the verifier then scores the result.

The protocol is Terminus-2's (the agent of Terminal-Bench 2.0, used to produce the trajectories of
"On Data Engineering for Scaling LLM Terminal Capabilities", Pi, Lam et al., 2026, arXiv 2602.21193):
each model turn is a JSON object with `analysis`, `plan`, `commands` (each `keystrokes` and a `duration`
in seconds to wait) and `task_complete`; the reply is the terminal's new output. A reply that does not
parse is answered with what was wrong and counted, never fatal. Declaring completion is confirmed once,
as Terminus does, so an agent that says "complete" by accident can go on.

Teachers: `OpenAITeacher` (any OpenAI-compatible chat endpoint, lmforge's own server included) and
`OracleTeacher`, which plays a task's reference solution through the same protocol, so trajectories
exist on machines without a strong model.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.terminal import sandbox
from lmforge.data.terminal.task import WORKDIR, TerminalTask, write_files
from lmforge.data.terminal.verify import verify

MAX_DURATION = 60.0  # seconds one command may ask to wait
TURN_OUTPUT_LIMIT = 16_000  # characters of terminal output returned per turn

SYSTEM_PROMPT = f"""You are an AI assistant solving command-line tasks in a Linux environment. You are given a task \
and the output of a terminal, and you reply with shell commands to run in it.

The terminal is a bash shell in {WORKDIR}, with no network. Reply with one JSON object and nothing else:
{{
  "analysis": "what the terminal output shows and what is still to be done",
  "plan": "what the next commands will do, and why",
  "commands": [{{"keystrokes": "ls -la\\n", "duration": 0.5}}],
  "task_complete": false
}}
Each command's keystrokes are typed into the terminal exactly as given: end a command with "\\n" to run it. \
"duration" is how many seconds to wait for its output (at most {MAX_DURATION:g}); the reply returns sooner \
when the shell is ready again. Send "C-c" as the whole keystrokes to interrupt a running command. \
Set "task_complete" to true only when the task is done; you will be asked to confirm once."""


class ProtocolError(ValueError):
    """A model turn that is not a valid Terminus JSON response."""


class TeacherError(RuntimeError):
    """The teacher could not answer (connection refused, HTTP error, timeout)."""


@dataclass(frozen=True)
class Command:
    keystrokes: str
    duration: float


@dataclass(frozen=True)
class Turn:
    """One parsed model turn."""

    analysis: str
    plan: str
    commands: tuple[Command, ...]
    task_complete: bool


def parse_turn(text: str) -> Turn:
    """Parse a model's reply into a `Turn`, or raise ProtocolError saying what is wrong (shown to the model).

    The JSON object may sit inside a code fence or between other text; its fields are checked strictly.
    """
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ProtocolError("no JSON object found; reply with one JSON object with analysis, plan, commands and task_complete")
    try:
        data = json.loads(text[start:end + 1])
    except json.JSONDecodeError as err:
        raise ProtocolError(f"the JSON does not parse: {err.msg} at character {err.pos}") from None
    if not isinstance(data, dict):
        raise ProtocolError("the reply must be a JSON object")
    missing = [k for k in ("analysis", "plan", "commands") if k not in data]
    if missing:
        raise ProtocolError(f"missing required field(s): {', '.join(missing)}")
    if not isinstance(data["commands"], list):
        raise ProtocolError("'commands' must be a list of objects with 'keystrokes' and 'duration'")
    commands = []
    for i, item in enumerate(data["commands"]):
        if not isinstance(item, dict) or not isinstance(item.get("keystrokes"), str):
            raise ProtocolError(f"command {i} must be an object whose 'keystrokes' is a string")
        duration = item.get("duration", 1.0)
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration >= 0:
            raise ProtocolError(f"command {i}: 'duration' must be a non-negative number of seconds")
        commands.append(Command(item["keystrokes"], min(float(duration), MAX_DURATION)))
    complete = data.get("task_complete", False)
    if not isinstance(complete, bool):
        raise ProtocolError("'task_complete' must be true or false")
    return Turn(str(data["analysis"]), str(data["plan"]), tuple(commands), complete)


def first_message(task: TerminalTask, screen: str) -> str:
    """The first user message: the task and the terminal as it stands."""
    return f"Task:\n{task.instruction.strip()}\n\nCurrent terminal state:\n{screen}"


def parse_error_message(error: ProtocolError) -> str:
    return f"Your previous response had a format error: {error}\nReply again with one valid JSON object."


def confirm_message(screen: str) -> str:
    return (f"Current terminal state:\n{screen}\n\nAre you sure the task is complete? The result will be graded "
            'and you cannot make further changes. If so, reply with "task_complete": true again; if not, go on.')


class OpenAITeacher:
    """A chat model behind an OpenAI-compatible `/chat/completions` endpoint (`url` ends in /v1)."""

    def __init__(self, url: str, model: str, api_key: str = "", temperature: float = 0.0,
                 max_tokens: int = 1024, timeout: float = 300.0):
        self.url = url.rstrip("/") + "/chat/completions"
        self.model, self.api_key = model, api_key
        self.temperature, self.max_tokens, self.timeout = temperature, max_tokens, timeout

    def describe(self) -> dict:
        return {"kind": "openai", "model": self.model, "temperature": self.temperature}

    def respond(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read(8 << 20))
            return str(reply["choices"][0]["message"]["content"] or "")
        except urllib.error.HTTPError as err:
            raise TeacherError(f"HTTP {err.code} from {self.url}: {err.read(300).decode('utf-8', 'replace')}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise TeacherError(f"cannot reach {self.url}: {getattr(err, 'reason', err)}") from None
        except (ValueError, KeyError, IndexError, TypeError):
            raise TeacherError(f"{self.url} did not answer with a chat completion") from None


class OracleTeacher:
    """Plays a task's reference solution through the protocol: look around, write and run the solution, check, finish."""

    def __init__(self, task: TerminalTask):
        self.task = task

    def describe(self) -> dict:
        return {"kind": "oracle"}

    def respond(self, messages: list[dict]) -> str:
        step = sum(m["role"] == "assistant" for m in messages)
        files = sorted(self.task.files)
        shown = " ".join(files[:4])
        if step == 0:
            turn = {"analysis": "I have not looked at the working directory yet.",
                    "plan": "List the files, then look at the start of the inputs to learn their format.",
                    "commands": [{"keystrokes": "ls -la\n", "duration": 0.5}]
                    + ([{"keystrokes": f"head -n 15 {shown}\n", "duration": 0.5}] if shown else []),
                    "task_complete": False}
        elif step == 1:
            script = self.task.solution.rstrip() + "\n"
            turn = {"analysis": f"The inputs are {', '.join(files) or 'not needed'}; I know their format now.",
                    "plan": "Write the whole solution as a script, run it, and list the directory to see what it made.",
                    "commands": [{"keystrokes": f"cat > /tmp/solve.sh <<'LMFORGE_EOF'\n{script}LMFORGE_EOF\n", "duration": 0.5},
                                 {"keystrokes": "bash -e /tmp/solve.sh && ls -la\n", "duration": 30.0}],
                    "task_complete": False}
        else:
            turn = {"analysis": "The script ran without errors and produced what the task asks for.",
                    "plan": "Mark the task complete.", "commands": [], "task_complete": True}
        return json.dumps(turn, indent=1)


@dataclass
class Episode:
    """A finished agent run: the conversation, counts, why it ended and the verifier's verdict."""

    task: TerminalTask
    teacher: dict
    messages: list[dict]
    turns: int
    malformed: int
    commands: int
    ended: str
    score: float
    passed: dict[str, bool]
    seconds: float
    sandbox_seconds: float

    def to_dict(self) -> dict:
        return {"task": self.task.id, "family": self.task.family, "domain": self.task.domain,
                "skills": list(self.task.skills), "teacher": self.teacher, "messages": self.messages,
                "turns": self.turns, "malformed": self.malformed, "commands": self.commands, "ended": self.ended,
                "score": self.score, "passed": self.passed, "seconds": round(self.seconds, 3),
                "sandbox_seconds": round(self.sandbox_seconds, 3)}


def run_episode(task: TerminalTask, teacher, *, max_turns: int = 30, limits: sandbox.Limits = sandbox.Limits(),
                count_model_time: bool = True) -> Episode:
    """Let `teacher` solve `task` in a fresh sandbox, then score its work with the task's verifier.

    The task's agent time limit counts the teacher's replies too, as Terminal-Bench does; without
    `count_model_time` only the rest (a local model on a few CPU cores can spend minutes on one reply).
    """
    start = time.monotonic()
    model_seconds = 0.0

    def agent_seconds() -> float:
        return time.monotonic() - start - (0.0 if count_model_time else model_seconds)

    messages: list[dict] = []
    turns = malformed = commands = 0
    ended = "max_turns"
    sandbox_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="lmforge-episode-") as work:
        write_files(task.files, Path(work))
        with sandbox.Shell(Path(work), limits) as shell:
            messages = [{"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": first_message(task, "$ ")}]
            confirming = False
            while turns < max_turns:
                if agent_seconds() >= task.agent_timeout:
                    ended = "timeout"
                    break
                asked = time.monotonic()
                try:
                    reply = teacher.respond(messages)
                except TeacherError as err:
                    ended = f"teacher_error: {err}"
                    break
                finally:
                    model_seconds += time.monotonic() - asked
                turns += 1
                messages.append({"role": "assistant", "content": reply})
                try:
                    turn = parse_turn(reply)
                except ProtocolError as err:
                    malformed += 1
                    confirming = False
                    messages.append({"role": "user", "content": parse_error_message(err)})
                    continue
                began = time.monotonic()
                outputs = []
                for command in turn.commands:
                    wait = min(command.duration, max(0.0, task.agent_timeout - agent_seconds()))
                    outputs.append(shell.send(command.keystrokes, wait))
                    commands += 1
                    if not shell.alive:
                        break
                sandbox_seconds += time.monotonic() - began
                screen = sandbox.truncate("".join(outputs), TURN_OUTPUT_LIMIT) or "$ "
                if shell.events:
                    ended = f"sandbox: {shell.events[-1]}"
                    messages.append({"role": "user", "content": f"New terminal output:\n{screen}\n[{shell.events[-1]}]"})
                    break
                if not shell.alive:
                    ended = "shell_exited"
                    break
                if turn.task_complete and confirming:
                    ended = "complete"
                    break
                confirming = turn.task_complete
                messages.append({"role": "user", "content": confirm_message(screen) if confirming
                                 else f"New terminal output:\n{screen}"})
        verdict = verify(task, Path(work), limits)
    return Episode(task, teacher.describe(), messages, turns, malformed, commands, ended, verdict.score,
                   verdict.passed, time.monotonic() - start, sandbox_seconds)

