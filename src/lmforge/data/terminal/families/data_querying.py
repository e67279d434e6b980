"""Data querying: an SQL dump of a small shop (customers, orders, order items) and a question about it,
answered as a CSV by loading the dump into SQLite and writing a join with filters, grouping and ordering."""

from __future__ import annotations

import random

from lmforge.data.terminal.families import Family
from lmforge.data.terminal.families.common import make_task, mutate, python_step, tests_module
from lmforge.data.terminal.task import TerminalTask

FIRST = ("Ada", "Bo", "Chen", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena", "Mateo",
         "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vera", "Wen", "Yusuf", "Zoe")
LAST = ("Lopez", "Okafor", "Berg", "Tanaka", "Silva", "Novak", "Haddad", "Kim", "Moreau", "Patel", "Costa", "Ivanova")
COUNTRIES = ("Canada", "Brazil", "Japan", "Kenya", "Norway", "Chile", "India", "Spain")
STATUSES = ("shipped", "delivered", "pending", "cancelled", "returned")
PRODUCTS = ("lamp", "desk", "chair", "monitor", "keyboard", "cable", "mouse", "shelf", "rug", "kettle")
HEADER = "customer_id,name,order_count,total"

SCHEMA = """CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
    order_date TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id),
    product TEXT NOT NULL, quantity INTEGER NOT NULL, price REAL NOT NULL);
"""

SOLUTION = '''
import csv
import sqlite3

db = sqlite3.connect(":memory:")
with open("shop.sql") as handle:
    db.executescript(handle.read())
marks = ",".join("?" * len(Q["statuses"]))
rows = db.execute(f"""
    SELECT c.id, c.name, COUNT(DISTINCT o.id), ROUND(SUM(i.quantity * i.price), 2) AS total
    FROM customers c JOIN orders o ON o.customer_id = c.id JOIN items i ON i.order_id = o.id
    WHERE c.country = ? AND substr(o.order_date, 1, 4) = ? AND o.status IN ({marks})
    GROUP BY c.id HAVING total >= ? ORDER BY total DESC, c.name, c.id LIMIT ?""",
    [Q["country"], str(Q["year"]), *Q["statuses"], Q["minimum"], Q["limit"]]).fetchall()
with open("result.csv", "w", newline="") as handle:
    writer = csv.writer(handle, lineterminator="\\n")
    writer.writerow(["customer_id", "name", "order_count", "total"])
    writer.writerows([cid, name, count, f"{total:.2f}"] for cid, name, count, total in rows)
'''

TESTS = [
    ("test_result_header", 1, """
        assert Path("result.csv").read_text().splitlines()[0] == HEADER
    """),
    ("test_customers", 2, """
        assert sorted(r["customer_id"] for r in result()) == sorted(r[0] for r in EXPECTED)
    """),
    ("test_counts_and_totals", 2, """
        got = {r["customer_id"]: (int(r["order_count"]), float(r["total"])) for r in result()}
        for cid, _, count, total in EXPECTED:
            assert got[cid][0] == count and abs(got[cid][1] - total) < 0.006, cid
    """),
    ("test_row_order", 1, """
        assert [r["customer_id"] for r in result()] == [r[0] for r in EXPECTED]
    """),
    ("test_names_and_format", 1, """
        rows = result()
        assert [(r["customer_id"], r["name"]) for r in rows] == [(r[0], r[1]) for r in EXPECTED]
        assert all(re.fullmatch(r"-?[0-9]+[.][0-9]{2}", r["total"]) for r in rows)
    """),
]

LOADER = """
def result():
    with open("result.csv", newline="") as handle:
        return list(csv.DictReader(handle))
"""


def _sql(value) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def _inserts(table: str, rows: list[tuple]) -> str:
    return "".join(f"INSERT INTO {table} VALUES({','.join(_sql(v) for v in row)});\n" for row in rows)


def _shop(rng: random.Random) -> tuple[list, list, list]:
    """Customers (id, name, country), orders (id, customer, date, status) and items (id, order, product, qty, price)."""
    names = rng.sample([f"{a} {b}" for a in FIRST for b in LAST], rng.randint(25, 40))
    countries = rng.sample(COUNTRIES, 4)
    customers = [(i + 1, name, rng.choice(countries)) for i, name in enumerate(names)]
    orders, items = [], []
    for oid in range(1, rng.randint(70, 110)):
        customer = rng.randint(1, len(customers))
        date = f"{rng.randint(2022, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        orders.append((oid, customer, date, rng.choice(STATUSES)))
        for _ in range(rng.randint(1, 3)):
            items.append((len(items) + 1, oid, rng.choice(PRODUCTS), rng.randint(1, 5), rng.randint(199, 49999) / 100))
    return customers, orders, items


def _answer(shop: tuple[list, list, list], q: dict) -> list[tuple]:
    """Qualifying (customer id, name, order count, total in cents) of the question, before threshold and limit."""
    customers, orders, items = shop
    chosen = {o[0]: o[1] for o in orders if o[2].startswith(str(q["year"])) and o[3] in q["statuses"]}
    spent: dict[int, int] = {}
    for _, oid, _, quantity, price in items:
        if oid in chosen:
            spent[chosen[oid]] = spent.get(chosen[oid], 0) + quantity * round(price * 100)
    return sorted(((cid, name, len({o for o, c in chosen.items() if c == cid}), spent[cid])
                   for cid, name, country in customers if country == q["country"] and cid in spent),
                  key=lambda r: (-r[3], r[1], r[0]))


def _minimum(rng: random.Random, cents: list[int]) -> int:
    """A whole-number threshold that falls in a gap of at least a unit between two totals (no rounding ties)."""
    gaps = [i for i in range(2, len(cents)) if cents[i - 1] - cents[i] >= 200]
    if not gaps:
        return 0
    return cents[rng.choice(gaps)] // 100 + 1


def _question(rng: random.Random, shop: tuple[list, list, list]) -> tuple[dict, list]:
    """The query's parameters and its answer, with a filtered-out order planted for a customer in the answer."""
    customers, orders, items = shop
    questions = [{"country": country, "year": year, "statuses": statuses}
                 for country in sorted({c[2] for c in customers}) for year in (2022, 2023, 2024)
                 for statuses in (["delivered"], ["shipped"], ["delivered", "shipped"])]
    rng.shuffle(questions)
    q = max(questions, key=lambda q: min(len(_answer(shop, q)), 3))  # the first with 3 customers or more
    rows = _answer(shop, q)
    q["minimum"] = _minimum(rng, [r[3] for r in rows])
    q["limit"] = rng.randint(3, 10)
    rows = [r for r in rows if r[3] >= q["minimum"] * 100][:q["limit"]]
    oid = len(orders) + 1
    orders.append((oid, rows[0][0], f"{q['year']}-06-15", rng.choice(("pending", "cancelled", "returned"))))
    items.append((len(items) + 1, oid, rng.choice(PRODUCTS), 2, 123.45))
    return q, [(str(cid), name, count, cents / 100) for cid, name, count, cents in rows]


def _build_spend(rng: random.Random, task_id: str) -> TerminalTask:
    shop = _shop(rng)
    q, expected = _question(rng, shop)
    customers, orders, items = shop
    dump = ("BEGIN TRANSACTION;\n" + SCHEMA + _inserts("customers", customers) + _inserts("orders", orders)
            + _inserts("items", items) + "COMMIT;\n")
    statuses = " or ".join(f"'{s}'" for s in q["statuses"])
    instruction = f"""
        shop.sql is an SQL dump (SQLite dialect) of a shop's database with tables customers, orders and items;
        an order's value is the sum of quantity * price over its items.

        Find the customers from {q['country']} who, counting only their orders placed in {q['year']} (order_date
        is YYYY-MM-DD) whose status is {statuses}, spent a total of at least {q['minimum']}. Write them to
        result.csv with the header line `{HEADER}`: order_count is the number of those orders and total their
        summed value written with exactly 2 decimals. Order the rows by total, highest first, then by name and
        then by customer_id; keep at most {q['limit']} rows. Use commas as separators and no index column.
    """
    code = python_step(f"Q = {q!r}\n" + SOLUTION)
    broken = mutate(code, " AND o.status IN ({marks})", "")
    broken = mutate(broken, "*Q[\"statuses\"], ", "")
    return make_task(SPEND, task_id, instruction=instruction, files={"shop.sql": dump},
                     tests=tests_module({"HEADER": HEADER, "EXPECTED": expected}, TESTS, LOADER), solution=code,
                     broken=broken, metadata={"broken": "ignores the order status filter", "question": q})


SPEND = Family("sql-customer-spend", "data_querying", ("sql", "joins", "filtering", "sorting", "csv-output"),
               _build_spend)

FAMILIES = (SPEND,)
