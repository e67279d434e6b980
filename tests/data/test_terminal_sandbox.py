"""Hostile commands in the terminal-task sandbox: each is contained and reported, and the machine is unharmed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from lmforge.data.terminal import sandbox
from lmforge.data.terminal.task import TerminalTask
from lmforge.data.terminal.verify import check_task, solve_and_verify

# As root, `make install-dev` installs bubblewrap, so a missing sandbox is a failure there, not a skip.
pytestmark = pytest.mark.skipif(not sandbox.available() and os.geteuid() != 0,
                                reason="bubblewrap is not installed (apt-get install bubblewrap)")


def _sandbox_processes() -> list[str]:
    """Processes of the sandboxes' unprivileged user ids (the range `sandbox` draws from, under root)."""
    listing = subprocess.run(["ps", "-eo", "uid=,pid=,comm="], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if 200_000 <= int(line.split()[0]) < 2_000_000]


def test_reading_and_deleting_outside_the_task_directory_is_impossible(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("the secret\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("mine\n")
    script = (f"cat {secret}; rm -rf {outside}; cat /etc/shadow; rm -f /usr/bin/env; touch /usr/planted; "
              "mkdir -p /home/x; cat mine.txt; echo written > new.txt")
    outcome = sandbox.run(work, script, timeout=10)
    assert "the secret" not in outcome.output
    assert secret.read_text() == "the secret\n"
    assert Path("/usr/bin/env").exists() and not Path("/usr/planted").exists()
    assert "Read-only file system" in outcome.output
    assert "mine" in outcome.output and (work / "new.txt").read_text() == "written\n"


def test_no_network_not_even_the_hosts_loopback(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    probe = (f"import socket\nfor host in ('127.0.0.1', '1.1.1.1'):\n"
             f"    try:\n        socket.create_connection((host, {port}), timeout=2); print('connected', host)\n"
             f"    except OSError as err:\n        print('refused', host, err.errno)\n")
    (tmp_path / "probe.py").write_text(probe)
    outcome = sandbox.run(tmp_path, "python3 probe.py", timeout=10)
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()
    assert "connected" not in outcome.output
    assert outcome.output.count("refused") == 2


def test_a_fork_bomb_is_contained_and_leaves_nothing_behind(tmp_path):
    start = time.monotonic()
    outcome = sandbox.run(tmp_path, ":(){ :|:& };: ; sleep 60", timeout=2, limits=sandbox.Limits(processes=64))
    assert outcome.stopped == "timeout" and outcome.returncode is None
    assert time.monotonic() - start < 10
    assert subprocess.run(["true"]).returncode == 0  # the machine still forks
    if os.geteuid() == 0:
        time.sleep(0.2)
        assert _sandbox_processes() == []


def test_filling_the_disk_stops_the_sandbox(tmp_path):
    limits = sandbox.Limits(disk_bytes=32 << 20, file_bytes=8 << 20)
    outcome = sandbox.run(tmp_path, "i=0; while true; do i=$((i+1)); head -c 16000000 /dev/zero > f$i; done",
                          timeout=30, limits=limits)
    assert outcome.stopped == "disk quota exceeded"
    assert sandbox.directory_bytes(tmp_path) < limits.disk_bytes + (64 << 20)
    assert all(f.stat().st_size <= limits.file_bytes for f in tmp_path.iterdir())


def test_memory_and_cpu_limits(tmp_path):
    limits = sandbox.Limits(memory_bytes=1 << 30, cpu_seconds=1)
    outcome = sandbox.run(tmp_path, "python3 -c 'x = bytearray(4 << 30)'; echo status $?; "
                                    "python3 -c 'while True: pass'; echo status $?", timeout=20, limits=limits)
    assert "MemoryError" in outcome.output
    assert "status 137" in outcome.output or "status 152" in outcome.output  # SIGKILL or SIGXCPU


@pytest.fixture(params=["default", "ignored"])
def parent_sigint(request):
    """SIGINT as a parent leaves it: default, or ignored (nohup, a pool worker), which the sandbox must not pass on."""
    if request.param == "default":
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_command_that_never_ends_is_interrupted_or_killed(tmp_path, parent_sigint):
    with sandbox.Shell(tmp_path) as shell:
        assert shell.send("echo hello; pwd\n", 5) == "hello\n/app\n$ "
        assert shell.send("sleep 1000\n", 0.3) == ""
        assert shell.send("C-c", 20).endswith("$ ")  # returns at the prompt: the limit only bounds a slow machine
        assert shell.send("trap '' INT; cd /tmp && pwd\n", 5) == "/tmp\n$ "
        shell.send("sleep 1000\n", 0.3)
        assert shell.send("C-c", 0.5) == ""  # ignored: the shell is still busy
    assert not shell.alive
    if os.geteuid() == 0:
        time.sleep(0.2)
        assert _sandbox_processes() == []


def test_shell_reports_a_disk_quota_breach(tmp_path):
    with sandbox.Shell(tmp_path, sandbox.Limits(disk_bytes=8 << 20, file_bytes=4 << 20)) as shell:
        shell.send("for i in $(seq 100); do head -c 4000000 /dev/zero > f$i; done\n", 20)
        assert shell.events == ["disk quota exceeded: the sandbox was stopped"]
        assert not shell.alive
        assert shell.send("ls\n") == "[the shell has exited]"


def test_long_output_keeps_its_head_and_tail(tmp_path):
    outcome = sandbox.run(tmp_path, "seq 1 100000", timeout=10)
    assert outcome.output.startswith("1\n2\n") and outcome.output.rstrip().endswith("100000")
    assert "characters left out" in outcome.output and len(outcome.output) < sandbox.OUTPUT_LIMIT + 100


def _task(**changes) -> TerminalTask:
    tests = ("from pathlib import Path\n\ndef test_exists():\n    assert Path('out.txt').exists()\n\n"
             "def test_value():\n    assert Path('out.txt').read_text().strip() == '6'\n")
    fields = dict(id="sum-0", family="sum", domain="data_processing", skills=("csv-parsing", "aggregation", "json-output"),
                  instruction="Write the sum of the numbers in in.txt to out.txt.", files={"in.txt": "1\n2\n3\n"},
                  tests=tests, weights={"test_exists": 1.0, "test_value": 3.0},
                  solution="python3 -c 'print(sum(int(x) for x in open(\"in.txt\")))' > out.txt",
                  broken="echo 5 > out.txt")
    return TerminalTask(**{**fields, **changes})


def test_weighted_partial_credit_and_sound_verifiers():
    check = check_task(_task())
    assert (check.reference_score, check.broken_score) == (1.0, 0.25) and check.sound


def test_planted_pytest_files_and_tampering_do_not_change_the_verdict():
    tamper = ("echo 5 > out.txt\n"
              "printf 'import pytest\\n@pytest.hookimpl(hookwrapper=True)\\ndef pytest_runtest_makereport(item, call):\\n"
              "    outcome = yield\\n    outcome.get_result().outcome = \"passed\"\\n' > conftest.py\n"
              "printf '[pytest]\\naddopts = -p no:junitxml\\n' > pytest.ini\n"
              "mkdir -p /logs 2>/dev/null; echo '<testsuite/>' > /logs/junit.xml 2>/dev/null || true\n")
    verdict, _ = solve_and_verify(_task(), tamper)
    assert verdict.score == 0.25 and verdict.passed == {"test_exists": True, "test_value": False}
