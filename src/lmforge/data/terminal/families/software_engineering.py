"""Software engineering: small command-line tools implemented from a written spec, with exact output and
exit codes for bad input; the tests run the tool as a user would, in a subprocess."""

from __future__ import annotations

import random

from lmforge.data.terminal.families import Family
from lmforge.data.terminal.families.common import RUN_HELPER, make_task, mutate, tests_module
from lmforge.data.terminal.task import TerminalTask

NUMERALS = ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
            (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))
COMMANDS = (("encode", "decode"), ("to-roman", "from-roman"), ("int2roman", "roman2int"))
BAD_NUMBERS = ("0", "4000", "-3", "12a", "3.5", "", " 7")
NON_CANONICAL = ("IIII", "VV", "XXXX", "XIIII", "LL", "CCCC", "VIIII", "DD")  # add up, but are not canonical
MALFORMED = ("IM", "VX", "MMMM", "ABC", "", "IIV", "DM", "IC")

ROMAN_TOOL = '''
import re
import sys

NUMERALS = ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
            (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))


def encode(n):
    out = ""
    for value, symbol in NUMERALS:
        while n >= value:
            out, n = out + symbol, n - value
    return out


def decode(text):
    if LOWER_OK:
        text = text.upper()
    total, i = 0, 0
    for value, symbol in NUMERALS:
        while text.startswith(symbol, i):
            total, i = total + value, i + len(symbol)
    if i != len(text) or not 1 <= total <= 3999 or encode(total) != text:
        raise ValueError(f"not a canonical Roman numeral: {text!r}")
    return total


def main(args):
    if len(args) != 2 or args[0] not in (ENCODE, DECODE):
        print(f"usage: {sys.argv[0]} {ENCODE} NUMBER | {DECODE} NUMERAL", file=sys.stderr)
        return USAGE_ERROR
    command, value = args
    try:
        if command == ENCODE:
            if not re.fullmatch("[0-9]+", value) or not 1 <= int(value) <= 3999:
                raise ValueError(f"not a whole number from 1 to 3999: {value!r}")
            print(encode(int(value)))
        else:
            print(decode(value))
    except ValueError as err:
        print(err, file=sys.stderr)
        return VALUE_ERROR
    return 0


sys.exit(main(sys.argv[1:]))
'''

ROMAN_TESTS = [
    ("test_encode", 2, """
        for number, numeral in ENCODED:
            done = run(TOOL, ENCODE, str(number))
            assert (done.returncode, done.stdout.strip()) == (0, numeral), number
    """),
    ("test_decode", 2, """
        for numeral, number in DECODED:
            done = run(TOOL, DECODE, numeral)
            assert (done.returncode, done.stdout.strip()) == (0, str(number)), numeral
    """),
    ("test_bad_numbers", 1, """
        for value in BAD_NUMBERS:
            done = run(TOOL, ENCODE, value)
            assert (done.returncode, done.stdout) == (VALUE_ERROR, ""), value
            assert done.stderr.strip(), value
    """),
    ("test_bad_numerals", 2, """
        for value in BAD_NUMERALS:
            done = run(TOOL, DECODE, value)
            assert (done.returncode, done.stdout) == (VALUE_ERROR, ""), value
            assert done.stderr.strip(), value
    """),
    ("test_usage_errors", 1, """
        for args in ([], ["convert", "12"], [ENCODE], [DECODE, "X", "V"]):
            done = run(TOOL, *args)
            assert (done.returncode, done.stdout) == (USAGE_ERROR, ""), args
            assert done.stderr.strip(), args
    """),
]


def _roman(n: int) -> str:
    out = []
    for value, symbol in NUMERALS:
        count, n = divmod(n, value)
        out.append(symbol * count)
    return "".join(out)


def _build_roman(rng: random.Random, task_id: str) -> TerminalTask:
    tool = rng.choice(("roman.py", "numerals.py", "romanize.py"))
    encode, decode = rng.choice(COMMANDS)
    value_error, usage_error = rng.choice((1, 3, 65)), rng.choice((2, 64))
    lower_ok = rng.random() < 0.5
    numbers = [1, 4, 3999] + rng.sample(range(5, 3999), 3)
    decoded = [(_roman(n), n) for n in [9, 40, 1994] + rng.sample(range(1, 4000), 3)]
    lower = [(_roman(n).lower(), n) for n in rng.sample(range(1, 4000), 2)]
    bad_numerals = rng.sample(NON_CANONICAL, 2) + rng.sample(MALFORMED, 3)
    bad_numerals += [] if lower_ok else [text for text, _ in lower]
    constants = {"TOOL": tool, "ENCODE": encode, "DECODE": decode, "VALUE_ERROR": value_error,
                 "USAGE_ERROR": usage_error, "ENCODED": [(n, _roman(n)) for n in numbers],
                 "DECODED": decoded + (lower if lower_ok else []), "BAD_NUMBERS": rng.sample(BAD_NUMBERS, 4),
                 "BAD_NUMERALS": bad_numerals}
    case = "Lower-case numerals are accepted too (xiv decodes to 14)." if lower_ok else \
        "Only upper-case numerals are valid (xiv is an invalid numeral)."
    instruction = f"""
        Write {tool}, a command-line converter between whole numbers and Roman numerals, run as
        `python3 {tool} {encode} NUMBER` or `python3 {tool} {decode} NUMERAL`.

        - {encode} takes a whole number from 1 to 3999 written in decimal digits only, and prints its canonical
          Roman numeral (upper case, subtractive forms IV, IX, XL, XC, CD, CM; 1994 is MCMXCIV).
        - {decode} takes a numeral and prints its value in decimal. The numeral must be canonical: exactly the
          numeral that {encode} prints for its value (so IIII, VV, IC or MMMM are invalid). {case}
        - Output is the result and a newline on stdout, exit status 0.
        - Invalid input (a number that is not all digits or is outside 1..3999, an invalid numeral, an empty
          argument): print nothing on stdout, an error message on stderr, and exit with status {value_error}.
        - Wrong usage (no arguments, an unknown command, too few or too many arguments): print a usage message
          on stderr and exit with status {usage_error}.
        Use only Python's standard library.
    """
    settings = (f"ENCODE, DECODE, LOWER_OK = {encode!r}, {decode!r}, {lower_ok}\n"
                f"VALUE_ERROR, USAGE_ERROR = {value_error}, {usage_error}\n")
    code = f"cat > {tool} <<'PYEOF'\n{settings}{ROMAN_TOOL.strip()}\nPYEOF\n"
    broken = mutate(code, " or encode(total) != text:", ":")
    return make_task(ROMAN, task_id, instruction=instruction, files={},
                     tests=tests_module(constants, ROMAN_TESTS, RUN_HELPER), solution=code, broken=broken,
                     metadata={"broken": "decodes non-canonical numerals (IIII, VV) instead of rejecting them"})


ROMAN = Family("roman-numeral-cli", "software_engineering",
               ("implement-from-spec", "command-line-interfaces", "python", "edge-cases", "exit-codes"), _build_roman)

FAMILIES = (ROMAN,)
