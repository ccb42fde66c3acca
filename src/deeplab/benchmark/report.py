"""The benchmark's results as a table on screen, a JSON document and a bar chart."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..utils.files import atomic_write_bytes
from ..visualize import plot_bars
from ..visualize.scatter import TradeoffPoint, plot_tradeoff
from .measure import Measured
from .pareto import TradeoffRow
from .peaks import ceilings


def rows(measured: list[Measured], *, flops: int, batch: int, peaks: dict[str, float]) -> list[dict[str, Any]]:
    """One dict per path: latency figures, images/s, ratio to the first path (the baseline), achieved GFLOP/s
    and its share of this precision's peak rate (``None`` where :func:`ceilings` gives the precision none),
    agreement with fp32 eager, memory."""
    base = measured[0].median
    out = []
    for m in measured:
        achieved = flops / m.median / 1e9
        peak = ceilings(peaks).get(m.precision)
        out.append({"path": m.name, "precision": m.precision, "median_ms": 1000 * m.median,
                    "min_ms": 1000 * min(m.seconds), "max_ms": 1000 * max(m.seconds), "runs": len(m.seconds),
                    "images_per_s": batch / m.median, "vs_baseline": base / m.median, "gflops": achieved,
                    "of_peak": achieved / peak if peak else None, "agreement": m.agreement,
                    "max_abs_diff": m.max_abs_diff, "rss_mb": m.rss_mb})
    return out


def table(results: list[dict[str, Any]]) -> str:
    header = (f"{'path':<22} {'median ms':>9} {'min':>7} {'max':>7} {'img/s':>7} {'vs base':>7} {'GFLOP/s':>8} "
              f"{'of peak':>7} {'agree %':>8} {'max |Δ|':>8} {'RSS MB':>7}")
    lines = [header, "-" * len(header)]
    for r in results:
        peak = f"{100 * r['of_peak']:.0f} %" if r["of_peak"] is not None else "—"
        lines.append(f"{r['path']:<22} {r['median_ms']:>9.1f} {r['min_ms']:>7.1f} {r['max_ms']:>7.1f} "
                     f"{r['images_per_s']:>7.2f} {r['vs_baseline']:>6.2f}x {r['gflops']:>8.1f} {peak:>7} "
                     f"{100 * r['agreement']:>8.3f} {r['max_abs_diff']:>8.4f} {r['rss_mb']:>7.0f}")
    return "\n".join(lines)


def write_json(document: dict[str, Any], path: str | os.PathLike) -> Path:
    return atomic_write_bytes(path, json.dumps(document, indent=2).encode())


def write_chart(results: list[dict[str, Any]], path: str | os.PathLike, title: str) -> Path:
    return plot_bars([r["path"] for r in results], [r["images_per_s"] for r in results], path, title=title,
                     unit="img/s", notes=[f"{r['vs_baseline']:.2f}x" for r in results])


def write_tradeoff_chart(rows: list[TradeoffRow], path: str | os.PathLike, title: str) -> Path:
    points = [TradeoffPoint(r.ms, r.miou, r.path, f"{r.strategy.name} · {r.path}", r.on_front) for r in rows]
    return plot_tradeoff(points, path, title=title)
