"""The unit that flows through data pipelines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """A text with a stable id (used for splitting and dedup) and free-form metadata."""

    text: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)
