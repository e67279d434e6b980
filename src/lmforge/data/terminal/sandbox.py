"""A sandbox for commands a model writes: they are hostile until shown otherwise.

Each sandbox is a bubblewrap (`bwrap`) container around one work directory: new mount, PID, network,
IPC and UTS namespaces; the host's `/usr` (and the Python that runs lmforge) read-only; the work
directory the only writable host path; a small private `/tmp`; no network device but loopback; every
process killed when the sandbox closes. Resource limits are set as rlimits before `bwrap` starts
(CPU seconds, address space, file size, open files) and, when lmforge runs as root, the commands run
as a fresh unprivileged user id so the process limit counts only the sandbox's processes and nothing
root owns is writable. The total size of the work directory is watched while commands run; a breach
kills the sandbox and is reported. Wall time is the caller's to bound (`run`'s timeout, `Shell`'s
duration), and a command that never ends is killed with the rest.

Two ways in: `run(script)` runs a bash script to the end (reference solutions, verifiers), `Shell`
is an interactive bash on a pseudo-terminal that takes keystrokes, as an agent's terminal does.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.data.terminal.task import WORKDIR
from lmforge.errors import LmforgeError

OUTPUT_LIMIT = 10_000  # characters of one command's output kept: its head and its tail
_PROMPT = "__lmforge_prompt_{}__$ "
_ETC = ("alternatives", "ld.so.cache", "localtime", "mime.types")


class SandboxError(LmforgeError):
    """The sandbox cannot be set up on this machine (no bubblewrap, no namespaces)."""


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use. Processes counts every process of the sandbox (enforced under root)."""

    cpu_seconds: int = 120
    memory_bytes: int = 4 << 30
    processes: int = 256
    file_bytes: int = 64 << 20
    disk_bytes: int = 256 << 20
    tmp_bytes: int = 64 << 20
    open_files: int = 512


@dataclass
class Outcome:
    """How a script ended: exit status (None when killed), output (head and tail), and why it was stopped."""

    returncode: int | None
    output: str
    seconds: float
    stopped: str = ""  # "", "timeout" or "disk quota exceeded"


def truncate(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """`text` cut to its first and last `limit`/2 characters with a marker of what was left out."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"


class HeadTail:
    """Bytes of a stream keeping only the first and last `limit` (what `truncate` shows), and the total seen."""

    def __init__(self, limit: int = OUTPUT_LIMIT):
        self.limit, self.head, self.tail, self.total = limit, b"", b"", 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit - len(self.head)
        if room > 0:
            self.head, data = self.head + data[:room], data[room:]
        self.tail = (self.tail + data)[-self.limit:]

    def endswith(self, suffix: bytes) -> bool:
        return (self.head + self.tail if len(self.tail) < len(suffix) else self.tail).endswith(suffix)

    def text(self) -> str:
        left_out = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {left_out} bytes left out ...]\n".encode() if left_out else b""
        return truncate((self.head + middle + self.tail).decode("utf-8", "replace"))


def available() -> bool:
    """Whether sandboxes can start here: bubblewrap on PATH and namespaces allowed."""
    return _probe() == ""


_probed: str | None = None


def _probe() -> str:
    global _probed
    if _probed is None:
        if shutil.which("bwrap") is None:
            _probed = "bubblewrap (bwrap) is not installed; install it (apt-get install bubblewrap, or your distribution's package)"
        else:
            done = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "true"],
                                  capture_output=True, text=True)
            _probed = "" if done.returncode == 0 else (
                f"bubblewrap cannot create namespaces here ({done.stderr.strip() or done.returncode}); "
                "enable unprivileged user namespaces or run as root")
    return _probed


def _python_roots() -> list[Path]:
    """The directories the running Python needs, so sandboxed commands get the same interpreter and pytest."""
    roots = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent.parent}
    return sorted(r for r in roots if not str(r).startswith("/usr"))


def _bwrap_argv(workdir: Path, limits: Limits, readonly: dict[str, Path], writable: dict[str, Path],
                uid: int | None) -> list[str]:
    argv = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--hostname", "sandbox", "--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp", "--perms", "0755", "--dir", "/etc"]
    for name in ("bin", "lib", "lib64", "sbin"):
        if Path(f"/{name}").is_symlink():
            argv += ["--symlink", os.readlink(f"/{name}"), f"/{name}"]
        elif Path(f"/{name}").is_dir():
            argv += ["--ro-bind", f"/{name}", f"/{name}"]
    for name in _ETC:
        if Path("/etc", name).exists():
            argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    made: set[str] = {"/", "/usr", "/tmp", "/proc", "/dev"}
    mounts = [(str(p), inside, "--ro-bind") for inside, p in readonly.items()]
    mounts += [(str(r), str(r), "--ro-bind") for r in _python_roots()]
    mounts += [(str(workdir), WORKDIR, "--bind")] + [(str(p), inside, "--bind") for inside, p in writable.items()]
    for source, inside, kind in mounts:
        for parent in reversed(Path(inside).parents):  # traversable parents, whatever their modes on the host
            if str(parent) not in made:
                argv += ["--perms", "0755", "--dir", str(parent)]
                made.add(str(parent))
        argv += [kind, source, inside]
        made.add(inside)
    argv += ["--chdir", WORKDIR, "--clearenv", "--setenv", "HOME", WORKDIR, "--setenv", "LANG", "C.UTF-8",
             "--setenv", "TERM", "dumb", "--setenv", "PATH", f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"]
    argv += ["--"]
    if uid is not None:
        argv += ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all"]
    return argv


# Signals a parent may ignore (nohup, a server, a pool worker) and the sandbox's commands would inherit ignored,
# so that C-c could not stop a command in the agent's terminal.
_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGHUP,
                    signal.SIGTERM)


def _limit(limits: Limits, uid: int | None, controlling_tty: bool):
    def apply() -> None:
        for number in _DEFAULT_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        if controlling_tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:  # counted per user: only meaningful for the sandbox's own uid
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
    return apply


def directory_bytes(root: Path) -> int:
    """Bytes allocated under `root` (files and directories, links not followed)."""
    total = 0
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += info.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
    return total


@dataclass
class _Box:
    """One started sandbox process and what it needs to be watched and stopped."""

    process: subprocess.Popen
    workdir: Path
    limits: Limits
    started: float = field(default_factory=time.monotonic)

    def over_quota(self) -> bool:
        return directory_bytes(self.workdir) > self.limits.disk_bytes

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # bwrap and its namespace's init die with it
            except ProcessLookupError:
                pass
        self.process.wait()


def _start(workdir: Path, command: list[str], limits: Limits, readonly: dict[str, Path], writable: dict[str, Path],
           tty: int | None = None) -> _Box:
    problem = _probe()
    if problem:
        raise SandboxError(problem)
    workdir = Path(workdir).resolve()
    uid = None
    if os.geteuid() == 0:
        uid = random.SystemRandom().randrange(200_000, 2_000_000)
        for path in [workdir, *workdir.rglob("*"), *writable.values()]:
            os.chown(path, uid, uid, follow_symlinks=False)
    argv = _bwrap_argv(workdir, limits, readonly, writable, uid) + command
    io = {"stdin": tty, "stdout": tty, "stderr": tty} if tty is not None else {
        "stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    process = subprocess.Popen(argv, start_new_session=True, preexec_fn=_limit(limits, uid, tty is not None),
                               close_fds=True, **io)
    return _Box(process, workdir, limits)


def run(workdir: Path, script: str, *, timeout: float = 60.0, limits: Limits = Limits(),
        readonly: dict[str, Path] | None = None, writable: dict[str, Path] | None = None) -> Outcome:
    """Run a bash script in a sandbox around `workdir` (seen as /app) until it ends or `timeout` passes.

    `readonly` / `writable` map paths inside the sandbox to host paths bound there (tests, a log directory).
    """
    box = _start(workdir, ["bash", "-c", script], limits, readonly or {}, writable or {})
    collected = HeadTail()
    stopped = ""
    assert box.process.stdout is not None
    fd = box.process.stdout.fileno()
    os.set_blocking(fd, False)
    deadline = box.started + timeout
    next_quota_check = 0.0
    while True:
        now = time.monotonic()
        if now >= deadline:
            stopped = "timeout"
            break
        ready, _, _ = select.select([fd], [], [], min(0.05, deadline - now))
        if ready:
            data = os.read(fd, 65536)
            if not data:
                break
            collected.add(data)
        if now >= next_quota_check:
            if box.over_quota():
                stopped = "disk quota exceeded"
                break
            next_quota_check = now + 0.05
    box.kill()
    box.process.stdout.close()
    seconds = time.monotonic() - box.started
    code = None if stopped else box.process.returncode
    return Outcome(code, collected.text(), seconds, stopped)


class Shell:
    """An interactive bash in a sandbox, driven by keystrokes like a terminal in tmux.

    `send(keys, duration)` types `keys` (with "C-c" / "C-d" style control keys allowed as whole
    strings) and returns what the terminal printed within `duration` seconds, returning early once the
    shell prompts again (a line ran, or an interrupt ended a command). Use as a context manager;
    `close()` kills everything.
    """

    CONTROL = {"C-c": "\x03", "C-d": "\x04", "C-z": "\x1a", "C-\\": "\x1c", "C-u": "\x15", "Enter": "\n"}

    def __init__(self, workdir: Path, limits: Limits = Limits(), readonly: dict[str, Path] | None = None):
        self.marker = _PROMPT.format(random.SystemRandom().getrandbits(48))
        master, slave = pty.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO  # the agent sees output, not its own keystrokes echoed back
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        command = ["bash", "--noprofile", "--norc", "-i"]
        self._box = _start(workdir, command, limits, readonly or {}, {}, tty=slave)
        os.close(slave)
        self._master = master
        self.events: list[str] = []
        self._write(f"PS1='{self.marker}'; PS2=''; unset PROMPT_COMMAND; set +H; bind 'set disable-completion on' 2>/dev/null\n")
        self._read_until_prompt(10.0)

    def __enter__(self) -> "Shell":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._box.process.poll() is None

    def _await_exit(self, timeout: float = 5.0) -> None:
        try:
            self._box.process.wait(timeout)
        except subprocess.TimeoutExpired:  # still running: `alive` stays true and the caller goes on
            pass

    def _write(self, text: str) -> None:
        try:
            os.write(self._master, text.encode("utf-8"))
        except OSError as err:
            if err.errno not in (errno.EIO, errno.EBADF):
                raise

    def _read_until_prompt(self, duration: float) -> str:
        out = HeadTail()
        deadline = time.monotonic() + duration
        next_quota_check = 0.0
        marker = self.marker.encode()
        while self.alive:
            now = time.monotonic()
            if now >= deadline:
                break
            ready, _, _ = select.select([self._master], [], [], min(0.05, deadline - now))
            if ready:
                try:
                    data = os.read(self._master, 65536)
                except OSError:  # the terminal closed: the shell is ending, and `alive` must say so once this returns
                    self._await_exit()
                    break
                out.add(data)
                if out.endswith(marker):
                    break
            if now >= next_quota_check:
                if self._box.over_quota():
                    self.events.append("disk quota exceeded: the sandbox was stopped")
                    self._box.kill()
                    break
                next_quota_check = now + 0.05
        return out.text().replace("\r\n", "\n").replace(self.marker, "$ ")

    def send(self, keys: str, duration: float = 1.0) -> str:
        """Type `keys` (a control key such as "C-c" as the whole string) and return the new output."""
        if not self.alive:
            return "[the shell has exited]"
        keys = self.CONTROL.get(keys, keys)
        self._write(keys)
        return self._read_until_prompt(max(0.0, duration))

    def close(self) -> None:
        self._box.kill()
        try:
            os.close(self._master)
        except OSError:
            pass

