"""The paper's Figure 4: how many of a 3×3 atrous filter's weights fall on the feature map, against the rate.

For every output position of a 65×65 map (a 513×513 input at output stride 8) and every rate, count the taps
``(i + a·r, j + b·r)``, ``a, b ∈ {-1, 0, 1}``, that land inside the map (the rest multiply zero padding). Print
and plot the share of positions where 9, 4 or just 1 of the weights are valid: as the rate approaches the map
size, the filter degenerates to its centre tap — a 1×1 conv that sees no context — which is why DeepLabV3 adds
the image-level pooling branch. The script checks that statement: at every rate ≥ the map size only the
centre tap remains.

    python benchmarks/atrous_valid_weights.py [--size 65] [--max-rate 70] [--png fig4.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from deeplab.visualize import plot_curves  # noqa: E402

SHOWN = (9, 4, 1)  # the counts the paper plots


def valid_taps(size: int, rate: int) -> np.ndarray:
    """size×size: how many of the 9 taps of a 3×3 filter at ``rate`` land inside the map at each position."""
    positions = np.arange(size)
    inside = np.stack([((positions + k * rate) >= 0) & ((positions + k * rate) < size) for k in (-1, 0, 1)])
    per_axis = inside.sum(0)  # taps inside along one axis: 1, 2 or 3
    return per_axis[:, None] * per_axis[None, :]


def shares(size: int, rate: int) -> dict[int, float]:
    counts = valid_taps(size, rate).ravel()
    return {n: float((counts == n).mean()) for n in SHOWN}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=65, help="feature map side (65: 513 input at OS8)")
    parser.add_argument("--max-rate", type=int, default=70)
    parser.add_argument("--png", type=Path, default=Path("atrous_valid_weights.png"))
    args = parser.parse_args(argv)

    curves: dict[str, list[tuple[float, float]]] = {f"{n} valid weights": [] for n in SHOWN}
    print(f"{args.size}x{args.size} map, 3x3 filter; share of positions with 9 / 4 / 1 valid weights")
    print(" rate      9      4      1")
    for rate in range(1, args.max_rate + 1):
        share = shares(args.size, rate)
        for n in SHOWN:
            curves[f"{n} valid weights"].append((rate, 100 * share[n]))
        if rate in (1, 2, 4, 6, 12, 18, 24, 32, 36, 48, 60, 64, 65) or rate == args.max_rate:
            print(f"{rate:5d}  " + "  ".join(f"{100 * share[n]:5.1f}" for n in SHOWN))
    centre_only = all(shares(args.size, r)[1] == 1.0 for r in range(args.size, args.max_rate + 1))
    half = next(r for r in range(1, args.max_rate + 1) if shares(args.size, r)[1] >= 0.5)
    print(f"rate >= {args.size} (the map size): only the centre tap is valid everywhere: {centre_only}")
    print(f"from rate {half} on, most positions ({'>='} 50 %) see a single valid weight")
    plot_curves(curves, args.png, title=f"Figure 4: valid weights of a 3x3 atrous filter on a {args.size}x{args.size} "
                f"map (%)", panels=[list(curves)], x_label="atrous rate")
    print(f"wrote {args.png}")
    return 0 if centre_only else 1


if __name__ == "__main__":
    sys.exit(main())
