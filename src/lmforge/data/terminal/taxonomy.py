"""The skill taxonomy of terminal work: nine domains, each with the primitive skills its tasks compose.

The domains are those of "On Data Engineering for Scaling LLM Terminal Capabilities" (Pi, Lam et al.,
2026, arXiv 2602.21193); a generated task names its domain and the 3-5 skills it exercises, so pass
rates can be reported per domain and per skill, and whole skills or families can be held out.
"""

from __future__ import annotations

DOMAINS: dict[str, tuple[str, ...]] = {
    "data_processing": ("csv-parsing", "data-cleaning", "grouping", "aggregation", "json-output", "text-transformation"),
    "data_querying": ("sql", "joins", "filtering", "sorting", "csv-output"),
    "data_science": ("descriptive-statistics", "correlation", "outlier-detection", "numeric-precision", "json-output"),
    "debugging": ("reading-code", "reproducing-failures", "python", "boundary-conditions", "regression-checks"),
    "dependency_management": ("version-constraints", "dependency-graph", "lock-files", "topological-order"),
    "file_operations": ("globbing", "moving-files", "hashing", "manifests", "renaming"),
    "scientific_computing": ("linear-algebra", "parsing-matrices", "numeric-precision", "numerical-integration",
                             "time-series"),
    "security": ("log-analysis", "regex", "secret-redaction", "file-permissions", "time-windows"),
    "software_engineering": ("implement-from-spec", "command-line-interfaces", "python", "edge-cases", "exit-codes"),
}


def check_skills(domain: str, skills: tuple[str, ...]) -> None:
    """Raise ValueError unless `domain` is known and `skills` are 3-5 of its skills (a family's declaration)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose from {', '.join(DOMAINS)}")
    unknown = [s for s in skills if s not in DOMAINS[domain]]
    if unknown:
        raise ValueError(f"skills {', '.join(unknown)} are not in domain {domain}")
    if not 3 <= len(skills) <= 5:
        raise ValueError(f"a task composes 3-5 skills, not {len(skills)}")
