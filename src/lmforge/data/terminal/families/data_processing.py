"""Data processing: a messy sales export (blank lines, malformed rows, quoted commas, inconsistent region
spelling) summarised into revenue per region."""

from __future__ import annotations

import random
from decimal import Decimal

from lmforge.data.terminal.families import Family
from lmforge.data.terminal.families.common import (csv_text, json_reader, make_task, mutate, python_step,
                                                    tests_module)
from lmforge.data.terminal.task import TerminalTask

REGIONS = ("north", "south", "east", "west", "central", "coastal", "highlands", "metro", "harbor")
PRODUCTS = ("widget", "gadget", "bolt, M8", "panel", "cable 2m", "sensor", "valve, brass", "pump", "hinge")
HEADER = ["order_id", "date", "region", "product", "quantity", "unit_price"]
BAD_QUANTITIES = ("", "n/a", "three", "2.5", "-")
BAD_PRICES = ("", "N/A", "free", "12,5")

SOLUTION = '''
import csv
import json
from decimal import Decimal, InvalidOperation

regions, skipped = {}, 0
with open("sales.csv", newline="") as handle:
    reader = csv.reader(handle)
    header = next(reader)
    for row in reader:
        if not row:
            continue
        record = dict(zip(header, row))
        region = record.get("region", "").strip().lower()
        try:
            price = Decimal(record.get("unit_price", ""))
        except InvalidOperation:
            price = None
        quantity = record.get("quantity", "")
        if len(row) != len(header) or not region or not quantity.isdigit() or price is None:
            skipped += 1
            continue
        totals = regions.setdefault(region, {"orders": 0, "revenue": Decimal(0)})
        totals["orders"] += 1
        totals["revenue"] += int(quantity) * price
out = {"regions": {name: {"orders": t["orders"], "revenue": float(round(t["revenue"], 2))}
                   for name, t in sorted(regions.items())},
       "total_revenue": float(round(sum(t["revenue"] for t in regions.values()), 2)),
       "skipped_rows": skipped}
with open("summary.json", "w") as handle:
    json.dump(out, handle, indent=2)
'''

TESTS = [
    ("test_summary_is_json", 1, """
        data = summary()
        assert isinstance(data, dict) and {"regions", "total_revenue", "skipped_rows"} <= set(data)
    """),
    ("test_region_names", 1, """
        assert sorted(summary()["regions"]) == sorted(EXPECTED["regions"])
    """),
    ("test_order_counts", 2, """
        got = summary()["regions"]
        assert {name: got[name]["orders"] for name in EXPECTED["regions"]} == \\
            {name: v["orders"] for name, v in EXPECTED["regions"].items()}
    """),
    ("test_revenue", 3, """
        data = summary()
        for name, want in EXPECTED["regions"].items():
            assert abs(data["regions"][name]["revenue"] - want["revenue"]) < 0.006, name
        assert abs(data["total_revenue"] - EXPECTED["total_revenue"]) < 0.006
    """),
    ("test_skipped_rows", 1, """
        assert summary()["skipped_rows"] == EXPECTED["skipped_rows"]
    """),
]

LOADER = json_reader("summary", "summary.json")


def _spelling(rng: random.Random, region: str) -> str:
    """A region name as a careless export writes it: any case, maybe padded with spaces."""
    return rng.choice((region, region.upper(), region.title(), f" {region}", f"{region.title()}  ",
                       f"  {region.upper()} "))


def _malformed(rng: random.Random, row: list[str]) -> list[str]:
    """`row` broken in one of the ways the instruction says to skip."""
    kind = rng.randrange(4)
    if kind == 0:
        return row[:-1]
    if kind == 1:
        return row[:4] + [rng.choice(BAD_QUANTITIES)] + row[5:]
    if kind == 2:
        return row[:5] + [rng.choice(BAD_PRICES)]
    return row[:2] + [rng.choice(("", "  "))] + row[3:]


def _sales(rng: random.Random) -> tuple[list, dict]:
    """Rows of the export (None for a blank line) and the summary they should give."""
    regions = rng.sample(REGIONS, rng.randint(3, 6))
    rows: list = []
    totals: dict[str, list] = {}
    skipped = 0
    for number in range(rng.randint(60, 140)):
        region = rng.choice(regions)
        quantity, price = rng.randint(1, 25), Decimal(rng.randint(100, 25000)) / 100
        row = [str(1000 + number), f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
               _spelling(rng, region), rng.choice(PRODUCTS), str(quantity), f"{price:.2f}"]
        if number % 17 == 5:
            row[2] = f"  {region.upper()} "  # every export has padded names
        if number % 13 == 7 or rng.random() < 0.05:
            rows.append(_malformed(rng, row))
            skipped += 1
            continue
        rows.append(row)
        totals.setdefault(region, [0, Decimal(0)])
        totals[region][0] += 1
        totals[region][1] += quantity * price
    for _ in range(rng.randint(1, 4)):
        rows.insert(rng.randrange(1, len(rows)), None)
    expected = {"regions": {r: {"orders": n, "revenue": float(round(v, 2))} for r, (n, v) in sorted(totals.items())},
                "total_revenue": float(round(sum(v for _, v in totals.values()), 2)), "skipped_rows": skipped}
    return rows, expected


def _build_revenue(rng: random.Random, task_id: str) -> TerminalTask:
    rows, expected = _sales(rng)
    text = "".join("\n" if row is None else csv_text([row]) for row in [HEADER, *rows])
    instruction = """
        sales.csv is an export of orders (columns order_id, date, region, product, quantity, unit_price) made by
        hand over many months: it has blank lines, malformed rows, and region names in inconsistent case with
        stray spaces. Fields may be quoted (a product name can contain a comma).

        Write summary.json, a JSON object with:
        - "regions": an object mapping each region name, trimmed and in lower case, to an object with "orders"
          (the number of valid rows of that region) and "revenue" (the sum of quantity * unit_price over them,
          rounded to 2 decimals);
        - "total_revenue": the revenue of all valid rows, rounded to 2 decimals;
        - "skipped_rows": the number of malformed rows.
        A row is malformed when it does not have exactly 6 fields, its region is empty after trimming, its
        quantity is not a whole number written in digits, or its unit_price is not a decimal number. Blank
        lines are not rows: ignore them and do not count them as skipped.
    """
    code = python_step(SOLUTION)
    broken = mutate(code, "if not row:\n            continue",
                    "if not row:\n            skipped += 1\n            continue")
    return make_task(REVENUE, task_id, instruction=instruction, files={"sales.csv": text},
                     tests=tests_module({"EXPECTED": expected}, TESTS, LOADER), solution=code, broken=broken,
                     metadata={"broken": "counts blank lines as skipped rows"})


REVENUE = Family("csv-revenue-by-region", "data_processing",
                 ("csv-parsing", "data-cleaning", "grouping", "aggregation", "json-output"), _build_revenue)

FAMILIES = (REVENUE,)
