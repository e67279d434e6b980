"""PII redaction: e-mail addresses, public IP addresses, phone numbers and secrets become placeholders.

Each kind has one placeholder (`PLACEHOLDERS`): `<EMAIL>`, `<IP_ADDRESS>`, `<PHONE>`, `<SECRET>`
(the typed-token style of BigCode's StarCoder PII pipeline). What each kind covers, and what it
deliberately leaves alone:

- email: `local@domain.tld` with a letters-only TLD, ASCII (the RFC 5322 subset that datatrove's
  PIIFormatter and BigCode match). Addresses at the reserved example domains (RFC 2606: example.com,
  .test, .invalid, localhost, ...) stay, like documentation IPs. Matrix products written without
  spaces (`x@w.weight`) read as addresses; PEP 8 spaces them.
- ip_address: dotted-quad IPv4 and IPv6 that the stdlib `ipaddress` calls global (the datatrove
  PIIFormatter check), excluding multicast, and for IPv6 only global unicast (2000::/3). Private,
  loopback, link-local, shared (100.64/10), documentation (192.0.2/24, 2001:db8::/32) and reserved
  addresses identify nobody and stay. A dotted quad stays as a version or section number when its
  first three parts are single digits ("1.2.3.4", "7.1.4.34", "8.2.4.44"; BigCode keeps x.x.x.x;
  this spares public resolvers such as 8.8.8.8 too) or when a version cue ("version", "release",
  "v", "==", ">=", ...) comes right before it. Parts of longer dotted runs (OIDs such as
  1.3.6.1.4.1.311) and parts with leading zeros never match.
- phone: "+" and a country code followed by digit groups (8 to 15 digits, E.164); North American
  "(415) 555-2671", "415-555-2671", "415.555.2671" (a leading trunk "1-" stays); and any national
  format ("030 12345678", "01 23 45 67 89") only right after a cue word ("Tel", "phone", "fax",
  "mobile", "Telefon", "téléphone", ...), since bare digit groups are as often dates, amounts or
  table columns. Dates, years and unseparated numbers without "+" never match.
- secret: private-key PEM blocks (BEGIN to END, or to the end of the key material when the END line
  is missing), AWS access key ids (AKIA/ASIA/ABIA/ACCA/A3T + 16), 40-character AWS secret keys
  assigned to an aws*key/secret name (quoted or not), GitHub tokens (ghp_/gho_/ghu_/ghs_/ghr_,
  github_pat_), Slack xox?- tokens, JWTs (eyJ...eyJ...), `Authorization:` credentials (Bearer
  or other schemes, and Basic ones that decode to user:password) and bare `Bearer <token>`, and
  quoted values assigned to names such as api_key, secret, token, password, credentials. Generic
  values (Bearer tokens, assignments) must look random: at least 12 characters with a letter, a
  digit and a Shannon entropy of 3 bits per character, so templates ("{token}"), placeholders
  ("your-api-key") and words stay. Token formats follow detect-secrets (the plugin set StarCoder
  used) and gitleaks. Unquoted YAML/INI values other than AWS secrets are not covered.

Only the redacted span is replaced: "Authorization: Bearer <SECRET>", "Tel: <PHONE>". Kinds run in
the order secret, email, ip_address, phone. Regexes are compiled once at import; a rule runs only on
texts that hold something every match needs (no "@": no e-mail scan), and patterns begin with a
literal or character class so the engine skips ahead fast: about 6 MB/s of Python source per core.
Placeholders contain nothing any rule matches, so redacting twice equals redacting once.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from lmforge.data.document import Document
from lmforge.data.steps import Step, StepStats
from lmforge.errors import ConfigError

PLACEHOLDERS = {"secret": "<SECRET>", "email": "<EMAIL>", "ip_address": "<IP_ADDRESS>", "phone": "<PHONE>"}
KINDS = tuple(PLACEHOLDERS)  # also the order in which kinds are redacted


@dataclass(frozen=True)
class _Rule:
    """A pattern whose `group` is replaced when `accept` (if any) agrees; it runs only on texts that
    pass `prefilter` (a cheap test for something every match needs)."""

    pattern: re.Pattern[str]
    prefilter: Callable[[str], object] | None = None
    group: int = 0
    accept: Callable[[re.Match[str]], bool] | None = None


def _contains(*needles: str) -> Callable[[str], bool]:
    return lambda text: any(needle in text for needle in needles)


def _contains_folded(*needles: str) -> Callable[[str], bool]:
    def test(text: str) -> bool:
        folded = text.lower()
        return any(needle in folded for needle in needles)

    return test


def _cased(*words: str) -> str:
    """An alternation of the words as written, Capitalised and UPPER case. Unlike IGNORECASE it
    keeps the regex engine's fast scan for a pattern's first characters (about 3x faster here)."""
    variants = (v for w in words for v in dict.fromkeys((w, w[0].upper() + w[1:], w.upper())))
    return "(?:" + "|".join(map(re.escape, variants)) + ")"


def _word_start(m: re.Match[str]) -> bool:
    return m.start() == 0 or not m.string[m.start() - 1].isalnum()


def _entropy(s: str) -> float:
    """Shannon entropy of the character distribution, bits per character."""
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _looks_random(value: str) -> bool:
    """A credential rather than a word, identifier, template or placeholder."""
    return (len(value) >= 12 and any("0" <= c <= "9" for c in value) and any(c.isalpha() for c in value)
            and _entropy(value) >= 3.0)


def _aws_secret(m: re.Match[str]) -> bool:
    return _word_start(m) and _looks_random(m.group(1))


def _auth_credential(m: re.Match[str]) -> bool:
    if not _word_start(m):
        return False
    if (m.group(1) or "").lower() != "basic":
        return _looks_random(m.group(2))
    try:
        return b":" in base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError):
        return False


# the name an assigned secret is given, read backwards from the assignment (so the scan starts at
# the rarer "=" or ":" and IGNORECASE costs nothing)
_SECRET_NAME_BEFORE = re.compile(r"(?i)(?:api[_-]?key|secret|token|passw(?:or)?d|pwd|private[_-]?key|access[_-]?key"
                                 r"|credentials?)(?:[_-]?(?:id|key|value|str|string|hash|b64))?[\"']?\s*\Z")


def _assigned_secret(m: re.Match[str]) -> bool:
    return _looks_random(m.group(2)) and bool(_SECRET_NAME_BEFORE.search(m.string, max(0, m.start() - 48), m.start()))


# an RFC 6750 token that is not a call ("base64.decodebytes(...)") or the start of a longer word
_TOKEN = r"[A-Za-z0-9._~+/-]{8,}=*(?![\w.~+/=(-])"

_SECRET_RULES = (
    _Rule(re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
                     r"|(?:(?:\s|\\[nr])+[A-Za-z0-9+/=]{8,})*)", re.DOTALL),
          _contains("PRIVATE KEY")),
    _Rule(re.compile(r"(?<![A-Za-z0-9])(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
          _contains("AKIA", "ASIA", "ABIA", "ACCA", "A3T")),
    _Rule(re.compile(_cased("aws") + r"(?i:[\w.-]{0,20}?(?:secret|key)[\w.-]{0,20}?)[\"']?\s*(?:=>|:=|[:=])\s*[\"']?"
                     r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"),
          group=1, accept=_aws_secret),
    _Rule(re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])"),
          _contains("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    _Rule(re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,250}"), _contains("xox")),
    _Rule(re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
          _contains("eyJ")),
    _Rule(re.compile(rf"{_cased('authorization')}[\"']?\s*[:=]\s*[\"']?"
                     rf"(?:({_cased('bearer', 'basic', 'token', 'digest')})\s+)?({_TOKEN})"),
          group=2, accept=_auth_credential),
    _Rule(re.compile(rf"({_cased('bearer')})\s+({_TOKEN})"), group=2, accept=_auth_credential),
    _Rule(re.compile(r"[:=][=>]?\s*[rbufRBUF]{0,2}([\"'])([^\"'\s\\]{12,256})\1"), group=2, accept=_assigned_secret),
)

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9_][A-Za-z0-9._%+-]{0,63}@"
                    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])")
_EMAIL_HINT = re.compile(r"[A-Za-z0-9_]@[A-Za-z0-9]")
_EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org", "example", "test", "invalid", "localhost")


def _personal_email(m: re.Match[str]) -> bool:
    domain = m.group(0).rpartition("@")[2].lower()
    return not any(domain == d or domain.endswith("." + d) for d in _EXAMPLE_DOMAINS)


# candidates start with a plain character class, the boundary look-behind follows it, and
# `ipaddress` validates: the engine then skips fast to the next digit
_IPV4 = re.compile(r"[0-9](?<![\w.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?!\w|\.[0-9])")
_IPV6 = re.compile(r"[23](?<![\w:.][23])[0-9A-Fa-f]{3}:[0-9A-Fa-f:]{2,35}[0-9A-Fa-f](?![\w:]|\.[0-9])")
_VERSION_CUE = re.compile(r"(?:\b(?:version|release|ver|rev|build|v)\.?|[=<>~!]=)\s*\Z", re.IGNORECASE)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _public_ipv4(m: re.Match[str]) -> bool:
    try:
        ip = ipaddress.IPv4Address(m.group(0))  # rejects parts over 255 and leading zeros
    except ValueError:
        return False
    if not ip.is_global or ip.is_multicast or all(len(part) == 1 for part in m.group(0).split(".")[:3]):
        return False
    return not _VERSION_CUE.search(m.string, max(0, m.start() - 16), m.start())


def _public_ipv6(m: re.Match[str]) -> bool:
    try:
        ip = ipaddress.IPv6Address(m.group(0))
    except ValueError:
        return False
    return ip in _GLOBAL_UNICAST and ip.is_global


_PHONE_GROUPS = re.compile(r"\+?[0-9]+(?:[ ./-][0-9]+)*")
_PHONE_SEPARATOR = re.compile(r"[ .-]")
_NANP_PREFIX = re.compile(r"(?<![\w+.-])(?:1[ .-]?)?\Z")


def _phone_digits(number: str, low: int, high: int) -> bool:
    return low <= sum(c.isdigit() for c in number) <= high


def _intl_phone(m: re.Match[str]) -> bool:
    # "." never mixes with other separators after the country code's: "+12.50 13.20" is two amounts
    separators = set(_PHONE_SEPARATOR.findall(m.group(0))[1:])
    return _phone_digits(m.group(0), 8, 15) and not ("." in separators and len(separators) > 1)


def _nanp_start(m: re.Match[str]) -> bool:
    # the leading trunk prefix "1 " stays in the text: "1-<PHONE>"
    return bool(_NANP_PREFIX.search(m.string, max(0, m.start() - 3), m.start()))


def _cued_phone(m: re.Match[str]) -> bool:
    number = m.group(1)
    return (_word_start(m) and _phone_digits(number, 7, 15)
            and bool(_PHONE_GROUPS.fullmatch(number.replace("(", "").replace(")", ""))))


_PHONE_CUES = _cased("tel", "tél", "telephone", "téléphone", "telefon", "telefono", "teléfono", "phone", "fax",
                     "mobile", "handy")

_PHONE_RULES = (
    _Rule(re.compile(r"\+(?<![\w+]\+)[1-9][0-9]{0,2}(?:[ .-]?\([0-9]{1,4}\))?[ .-]?[0-9]{1,4}(?:[ .-]?[0-9]{2,4}){1,4}"
                     r"(?!\w|[.-]?[0-9])"),
          _contains("+"), accept=_intl_phone),
    _Rule(re.compile(r"[(2-9](?:(?<=\()[2-9][0-9]{2}\) ?|(?<=[0-9])[0-9]{2}([.-]))[0-9]{3}(?(1)\1|[ .-])[0-9]{4}"
                     r"(?!\w|[.-][0-9])"),
          accept=_nanp_start),
    _Rule(re.compile(_PHONE_CUES + r"\.?(?:\s*(?i:no|nr|number|num)\b\.?)?\s*[:=]?\s*[\"']?"
                     r"(\+?\(?[0-9][0-9 ()./-]{5,18}[0-9])(?!\w|[.-][0-9])"),
          _contains_folded("tel", "tél", "phone", "fax", "mobile", "handy"), group=1, accept=_cued_phone),
)

_RULES = {
    "secret": _SECRET_RULES,
    "email": (_Rule(_EMAIL, lambda text: "@" in text and _EMAIL_HINT.search(text), accept=_personal_email),),
    "ip_address": (_Rule(_IPV4, accept=_public_ipv4), _Rule(_IPV6, _contains(":"), accept=_public_ipv6)),
    "phone": _PHONE_RULES,
}


def _apply(rule: _Rule, placeholder: str, text: str) -> tuple[str, int]:
    count = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal count
        if rule.accept is not None and not rule.accept(m):
            return m.group(0)
        count += 1
        if rule.group == 0:
            return placeholder
        return text[m.start():m.start(rule.group)] + placeholder + text[m.end(rule.group):m.end()]

    return rule.pattern.sub(replace, text), count


def redact(text: str, kinds: Iterable[str] = KINDS) -> tuple[str, Counter]:
    """`text` with the PII of `kinds` replaced by placeholders, and how many of each kind were replaced."""
    wanted = set(kinds)
    counts: Counter = Counter()
    for kind in KINDS:
        if kind not in wanted:
            continue
        for rule in _RULES[kind]:
            if rule.prefilter is None or rule.prefilter(text):
                text, n = _apply(rule, PLACEHOLDERS[kind], text)
                if n:
                    counts[kind] += n
    return text, counts


@dataclass
class RedactPII(Step):
    """Replaces the PII of `kinds` (any of "secret", "email", "ip_address", "phone") by typed
    placeholders, so a model trained on the text cannot memorise and leak it. Counts per kind go to
    `stats.changed` and, for documents that had any, to `metadata["pii"]`."""

    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    name = "pii"

    def __post_init__(self) -> None:
        if isinstance(self.kinds, str) or not set(self.kinds) <= set(KINDS):
            raise ConfigError(f"pii kinds={self.kinds!r}: give a list drawn from {', '.join(KINDS)}")

    def process(self, docs: Iterator[Document], stats: StepStats) -> Iterator[Document]:
        for doc in docs:
            text, counts = redact(doc.text, self.kinds)
            if counts:
                stats.changed.update(counts)
                doc = dataclasses.replace(doc, text=text, metadata={**doc.metadata, "pii": dict(counts)})
            yield doc
