"""Security: an sshd auth log turned into a blocklist of brute-forcing addresses (failures within a time
window, not in total), and a service's secrets redacted from its config and logs with its key file locked
down."""

from __future__ import annotations

import hashlib
import random
import string

from lmforge.data.terminal.families import Family
from lmforge.data.terminal.families.common import make_task, mutate, python_step, tests_module
from lmforge.data.terminal.task import TerminalTask

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
USERS = ("root", "admin", "ubuntu", "deploy", "git", "oracle", "test", "postgres", "pi", "guest")
STAFF = ("alice", "bob", "carol", "dmitri", "erin")
NETS = ("203.0.113.", "198.51.100.", "192.0.2.", "10.0.0.", "10.0.1.")

BLOCKLIST_SOLUTION = '''
import re
from pathlib import Path

failures = {}
line_re = re.compile(r"^\\w{3}\\s+(\\d+) (\\d\\d):(\\d\\d):(\\d\\d) .*Failed password for .* from (\\S+) port \\d+")
for line in Path("auth.log").read_text().splitlines():
    match = line_re.match(line)
    if match:
        day, hh, mm, ss, ip = match.groups()
        failures.setdefault(ip, []).append(((int(day) * 24 + int(hh)) * 60 + int(mm)) * 60 + int(ss))
blocked = []
for ip, times in failures.items():
    times.sort()
    if any(times[i + LIMIT - 1] - times[i] <= WINDOW for i in range(len(times) - LIMIT + 1)):
        blocked.append(ip)
blocked.sort(key=lambda ip: tuple(int(part) for part in ip.split(".")))
Path("blocklist.txt").write_text("".join(ip + "\\n" for ip in blocked))
'''

BLOCKLIST_TESTS = [
    ("test_blocklist_exists", 1, """
        assert Path("blocklist.txt").is_file()
    """),
    ("test_format_and_order", 1, """
        ips = blocklist()
        assert ips and all(re.fullmatch(r"[0-9]{1,3}([.][0-9]{1,3}){3}", ip) for ip in ips)
        keys = [tuple(int(p) for p in ip.split(".")) for ip in ips]
        assert keys == sorted(set(keys))
    """),
    ("test_blocks_every_attacker", 2, """
        assert set(EXPECTED) <= set(blocklist())
    """),
    ("test_no_false_positives", 2, """
        assert set(blocklist()) <= set(EXPECTED)
    """),
]

BLOCKLIST_LOADER = """
def blocklist():
    return [line.strip() for line in Path("blocklist.txt").read_text().splitlines() if line.strip()]
"""


def _addresses(rng: random.Random, count: int) -> list[str]:
    """`count` distinct IPv4 addresses from documentation and private ranges."""
    pool = [net + str(host) for net in NETS for host in range(1, 255)]
    return rng.sample(pool, count)


def _port(rng: random.Random) -> int:
    return rng.randint(30000, 65000)


def _failure_times(rng: random.Random, kind: str, limit: int, window: int) -> list[int]:
    """Offsets in seconds of one address's failures: a burst that trips the rule, a slow stream that never
    does, or a near miss (exactly `limit` failures spanning one second more than the window)."""
    if kind == "burst":
        span = rng.choice((window, rng.randint(limit, window)))
        inner = sorted(rng.randint(0, span) for _ in range(limit - 2 + rng.randint(0, 4)))
        return [0, *inner, span]
    if kind == "slow":
        gap = window // (limit - 1) + 1
        times = [0]
        for _ in range(limit + rng.randint(1, 5)):
            times.append(times[-1] + gap + rng.randint(0, 90))
        return times
    return [0, *sorted(rng.randint(1, window) for _ in range(limit - 2)), window + 1]


def _auth_log(rng: random.Random, limit: int, window: int) -> tuple[str, list[str]]:
    """The log's text and the addresses that must be blocked."""
    kinds = ["burst"] * rng.randint(2, 4) + ["slow"] * rng.randint(2, 3) + ["near"] + ["benign"] * rng.randint(2, 4)
    ips = _addresses(rng, len(kinds))
    events = []  # (second of the day, message)
    for kind, ip in zip(kinds, ips):
        start = rng.randint(3600, 40000)
        times = sorted(rng.randint(0, 20000) for _ in range(rng.randint(0, limit - 1))) if kind == "benign" \
            else _failure_times(rng, kind, limit, window)
        for t in times:
            user = rng.choice(USERS)
            who = user if user in ("root", "admin") else f"invalid user {user}"
            events.append((start + t, f"Failed password for {who} from {ip} port {_port(rng)} ssh2"))
        if rng.random() < 0.5:
            events.append((start + rng.randint(0, 600),
                           f"Invalid user {rng.choice(USERS)} from {ip} port {_port(rng)}"))
        if kind == "benign":
            events.append((start + rng.randint(0, 30000),
                           f"Accepted password for {rng.choice(STAFF)} from {ip} port {_port(rng)} ssh2"))
        events.append((start + max(times, default=0) + 5, f"Connection closed by {ip} port {_port(rng)} [preauth]"))
    for _ in range(rng.randint(3, 8)):
        events.append((rng.randint(0, 86399),
                       f"pam_unix(sshd:session): session opened for user {rng.choice(STAFF)} by (uid=0)"))
    month, day, host = rng.choice(MONTHS), rng.randint(1, 28), rng.choice(("web01", "bastion", "db-2", "gw"))
    lines = [f"{month} {day:>2} {t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d} {host} "
             f"sshd[{rng.randint(900, 40000)}]: {msg}" for t, msg in sorted(events)]
    blocked = sorted((ip for kind, ip in zip(kinds, ips) if kind == "burst"),
                     key=lambda a: tuple(map(int, a.split("."))))
    return "\n".join(lines) + "\n", blocked


def _build_blocklist(rng: random.Random, task_id: str) -> TerminalTask:
    limit, minutes = rng.randint(3, 6), rng.randint(2, 10)
    log, blocked = _auth_log(rng, limit, minutes * 60)
    instruction = f"""
        auth.log is one day of sshd's log from a server under attack. Write blocklist.txt with the IP addresses
        to block, one per line, in ascending numeric order of their four parts (10.0.0.9 before 10.0.0.10), each
        once.

        Block an address when the log has at least {limit} "Failed password" lines from it whose timestamps lie
        within {minutes} minutes of each other: that is, {limit} such failures where the last is at most
        {minutes * 60} seconds after the first. Only "Failed password" lines count (not "Invalid user" lines, not
        closed connections, not accepted logins); an address with many failures spread out over the day is not
        to be blocked.
    """
    code = python_step(f"LIMIT, WINDOW = {limit}, {minutes * 60}\n" + BLOCKLIST_SOLUTION)
    broken = mutate(code, "if any(times[i + LIMIT - 1] - times[i] <= WINDOW for i in range(len(times) - LIMIT + 1)):",
                    "if len(times) >= LIMIT:")
    return make_task(BLOCKLIST, task_id, instruction=instruction, files={"auth.log": log},
                     tests=tests_module({"EXPECTED": blocked}, BLOCKLIST_TESTS, BLOCKLIST_LOADER), solution=code,
                     broken=broken, metadata={"broken": "counts failures over the whole day, ignoring the window"})


BLOCKLIST = Family("ssh-bruteforce-blocklist", "security", ("log-analysis", "regex", "time-windows"), _build_blocklist)

SECRET_NAMES = ("STRIPE_API_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "GITHUB_TOKEN", "JWT_SECRET",
                "SESSION_SECRET", "SLACK_BOT_TOKEN", "SENDGRID_API_KEY", "REDIS_PASSWORD", "SMTP_PASSWORD",
                "SENTRY_AUTH_TOKEN")
DECOYS = (("KEY_PATH", "/etc/ssl/private/server.key"), ("TOKEN_TTL", "3600"), ("SECRET_ROTATION_DAYS", "30"),
          ("PASSWORD_MIN_LENGTH", "12"), ("PUBLIC_KEY_ID", "kid-2024-01"), ("API_KEY_HEADER", "X-Api-Key"))
PLAIN = (("APP_ENV", "production"), ("PORT", "8080"), ("LOG_LEVEL", "info"), ("DB_HOST", "db.internal"),
         ("DB_NAME", "orders"), ("WORKERS", "4"), ("REGION", "eu-west-1"), ("CACHE_URL", "redis://cache:6379/0"))
MARK = "REDACTED"
ALNUM = string.ascii_letters + string.digits

REDACT_SOLUTION = r'''
import os
import re
from pathlib import Path

env = Path("service.env")
names = re.compile(r"^(\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*(?:_KEY|_SECRET|_TOKEN|_PASSWORD))=.*$", re.M)
env.write_text(names.sub(r"\1=REDACTED", env.read_text()))
log = Path("app.log")
text = re.sub(r"sk_live_[A-Za-z0-9]{24}", "sk_live_REDACTED", log.read_text())
log.write_text(re.sub(r"ghp_[A-Za-z0-9]{36}", "ghp_REDACTED", text))
os.chmod("deploy_key", 0o600)
'''

REDACT_TESTS = [
    ("test_env_secrets_removed", 2, """
        text = Path("service.env").read_text()
        assert not [value for value in SECRETS if value in text]
    """),
    ("test_env_exact", 2, """
        assert Path("service.env").read_text() == ENV
    """),
    ("test_log_redacted", 2, """
        assert Path("app.log").read_text() == LOG
    """),
    ("test_key_mode", 1, """
        assert stat.S_IMODE(os.stat("deploy_key").st_mode) == 0o600
    """),
    ("test_key_unchanged", 1, """
        assert hashlib.sha256(Path("deploy_key").read_bytes()).hexdigest() == KEY_SHA256
    """),
]


def _token(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(ALNUM) for _ in range(length))


def _env(rng: random.Random) -> tuple[str, str, list[str]]:
    """The env file, its redacted form, and the secret values (each secret maybe quoted or exported)."""
    entries = [(n, v, False) for n, v in rng.sample(PLAIN, 4) + rng.sample(DECOYS, rng.randint(1, 3))]
    entries += [(n, _token(rng, rng.randint(16, 40)), True) for n in rng.sample(SECRET_NAMES, rng.randint(3, 5))]
    rng.shuffle(entries)
    original, redacted = ["# service settings (do not commit)"], ["# service settings (do not commit)"]
    for name, value, secret in entries:
        prefix = "export " if rng.random() < 0.2 else ""
        shown = f'"{value}"' if secret and rng.random() < 0.4 else value
        original.append(f"{prefix}{name}={shown}")
        redacted.append(f"{prefix}{name}={MARK}" if secret else original[-1])
        if rng.random() < 0.2:
            original.append("")
            redacted.append("")
    return "\n".join(original) + "\n", "\n".join(redacted) + "\n", [v for _, v, s in entries if s]


def _app_log(rng: random.Random) -> tuple[str, str]:
    """An application log mentioning payment and GitHub tokens, and the same log with them redacted."""
    original, redacted = [], []
    for i in range(rng.randint(12, 30)):
        stamp = f"2024-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
        kind = rng.random()
        if kind < 0.25:
            token = _token(rng, 24)
            line = f"{stamp} INFO charge created with key sk_live_{token} amount={rng.randint(100, 9999)}"
            clean = line.replace(f"sk_live_{token}", "sk_live_REDACTED")
        elif kind < 0.4:
            token = _token(rng, 36)
            line = f"{stamp} DEBUG cloning with token=ghp_{token}, depth=1"
            clean = line.replace(f"ghp_{token}", "ghp_REDACTED")
        elif kind < 0.5:
            line = clean = f"{stamp} INFO test payment with sk_test_{_token(rng, 24)} ok"
        else:
            line = clean = f"{stamp} INFO request {i} served in {rng.randint(2, 900)}ms"
        original.append(line)
        redacted.append(clean)
    return "\n".join(original) + "\n", "\n".join(redacted) + "\n"


def _build_redact(rng: random.Random, task_id: str) -> TerminalTask:
    env, env_clean, secrets = _env(rng)
    log, log_clean = _app_log(rng)
    key = ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(_token(rng, 64) for _ in range(rng.randint(4, 7)))
           + "\n-----END OPENSSH PRIVATE KEY-----\n")
    instruction = """
        Before this service's directory is shared, clean it up:
        - In service.env, every variable whose name ends in _KEY, _SECRET, _TOKEN or _PASSWORD must have its whole
          value (everything after the first '=', quotes included) replaced by REDACTED. Keep every other line,
          including comments, blank lines, `export` prefixes and variables that merely contain those words,
          exactly as it is.
        - In app.log, replace every live payment key (sk_live_ followed by 24 letters or digits) with
          sk_live_REDACTED and every GitHub token (ghp_ followed by 36 letters or digits) with ghp_REDACTED;
          change nothing else (test keys, sk_test_..., stay).
        - Make deploy_key readable and writable by its owner only (mode 600), without changing its content.
    """
    code = python_step(REDACT_SOLUTION)
    broken = mutate(code, "[A-Za-z_][A-Za-z0-9_]*(?:_KEY|_SECRET|_TOKEN|_PASSWORD)",
                    "[A-Za-z0-9_]*(?:KEY|SECRET|TOKEN|PASSWORD)[A-Za-z0-9_]*")
    constants = {"SECRETS": secrets, "ENV": env_clean, "LOG": log_clean,
                 "KEY_SHA256": hashlib.sha256(key.encode()).hexdigest()}
    return make_task(REDACT, task_id, instruction=instruction,
                     files={"service.env": env, "app.log": log, "deploy_key": key},
                     tests=tests_module(constants, REDACT_TESTS), solution=code, broken=broken,
                     metadata={"broken": "redacts variables that merely contain KEY/SECRET/TOKEN/PASSWORD"})


REDACT = Family("redact-secrets", "security", ("regex", "secret-redaction", "file-permissions"), _build_redact)

FAMILIES = (BLOCKLIST, REDACT)
