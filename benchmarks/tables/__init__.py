"""Table specs per recorded area: `tables/<area>.py` (a dash in the area is an underscore in the module) holds
`TABLES`, each table's columns by name, as BENCHMARKS.md's `<!-- results:<area>:<table> -->` markers name them."""

import importlib
import pkgutil

TABLES = {
    info.name.replace("_", "-"): importlib.import_module(f"{__name__}.{info.name}").TABLES
    for info in pkgutil.iter_modules(__path__)
}
