"""Time of the paired intervals of a robustness table (emca_vis.stats.robustness_intervals).

    python benchmarks/paired_stats_speed.py [--models 7] [--corruptions 15] [--severities 5] [--images 500]
        [--resamples 1000] [--repeats 3]

Random per-image correctness of the given shape (the default run's: 7 models, 15 x 5 cells,
500 images); prints the best of ``--repeats`` timings: bootstrap of every score of every model
and of every pair, and McNemar's test of every pair.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from emca_vis.stats import robustness_intervals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=7)
    parser.add_argument("--corruptions", type=int, default=15)
    parser.add_argument("--severities", type=int, default=5)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cells = 1 + args.corruptions * args.severities
    # Accuracy falls with severity, as in a real table, so the baseline has errors to divide by.
    accuracy = np.concatenate([[0.9], np.tile(np.linspace(0.8, 0.4, args.severities), args.corruptions)])
    correct = {f"m{i}": rng.random((cells, args.images)) < accuracy[:, None] + 0.01 * i for i in range(args.models)}
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        found = robustness_intervals(correct, args.severities, list(range(args.corruptions)), "m0", args.resamples)
        best = min(best, time.perf_counter() - start)
    print(f"{args.models} models x {cells} cells x {args.images} images, {args.resamples} resamples, "
          f"{len(found['pairs'])} pairs: {best:.2f} s (best of {args.repeats})")


if __name__ == "__main__":
    main()
