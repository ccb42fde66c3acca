"""``plain``: nested containers as JSON/YAML-ready data (tuples become lists), so what is saved reads back equal."""

from __future__ import annotations

from typing import Any, Mapping


def plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
