"""The metrics CSV the curves come from: ``iteration,<metric>,...``, one row per x value, an empty cell
where a metric has no value at that iteration. :func:`read_metrics_csv` / :func:`write_metrics_csv`."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Mapping, Sequence

from ..utils.files import atomic_write_bytes

Series = list[tuple[float, float]]

def read_metrics_csv(path: str | os.PathLike) -> dict[str, Series]:
    """``iteration,<metric>,...`` CSV → ``{metric: [(iteration, value), ...]}`` (empty cells skipped).

    The first column is the x value whatever its header says; columns keep their order; a metric with no
    values at all gives an empty list; ``nan`` cells are kept (the plot breaks the line there).
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return {}
    header = [h.strip() for h in rows[0]]
    names = header[1:]
    out: dict[str, Series] = {name: [] for name in names}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        try:
            x = float(row[0])
        except ValueError as error:
            raise ValueError(f"{path}:{line}: bad {header[0]!r} value {row[0]!r}") from error
        for name, cell in zip(names, row[1:]):
            cell = cell.strip()
            if not cell:
                continue
            try:
                out[name].append((x, float(cell)))
            except ValueError as error:
                raise ValueError(f"{path}:{line}: bad {name!r} value {cell!r}") from error
    return out


def write_metrics_csv(series: Mapping[str, Sequence[Sequence[float]]], path: str | os.PathLike, *,
                      x_name: str = "iteration") -> Path:
    """The inverse of :func:`read_metrics_csv`: one row per x value, empty cells where a metric has none."""
    names = list(series)
    table: dict[float, dict[str, float]] = {}
    for name in names:
        for x, y in series[name]:
            table.setdefault(float(x), {})[name] = float(y)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([x_name, *names])
    for x in sorted(table):
        cells = table[x]
        writer.writerow([_csv_number(x), *(_csv_number(cells[n]) if n in cells else "" for n in names)])
    return atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def _csv_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
