"""EASE's solve: models.baselines.ease_weights (float32 Cholesky, in place) against the float64 general inverse.

At 1M users EASE keeps 20,000 items; its three validation fits spent 447 s in numpy's inverse (bench/README.md,
"Profile of the 1M-user night"). This times both solves on a random co-occurrence matrix of --items items and
checks that the users' top 10 agree.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from models.baselines import ease_weights  # noqa: E402


def float64_inverse(gram: np.ndarray, regularization: float) -> np.ndarray:
    """The plain closed form: B = -P / diag(P), P = inv(G + lambda I) in float64, zero diagonal."""
    matrix = gram.astype(np.float64)
    matrix[np.diag_indices_from(matrix)] += regularization
    inverse = np.linalg.inv(matrix)
    b = -inverse / np.diag(inverse)
    b[np.diag_indices_from(b)] = 0.0
    return b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=6000)
    parser.add_argument("--users", type=int, default=40_000)
    parser.add_argument("--regularization", type=float, default=500.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = (rng.random((args.users, args.items), dtype=np.float32) < 0.01).astype(np.float32)
    gram = x.T @ x
    warm = gram[:64, :64]  # first LAPACK calls start its threads: not part of either solve
    float64_inverse(warm, args.regularization), ease_weights(warm.copy(), args.regularization)
    started = time.perf_counter()
    baseline = float64_inverse(gram, args.regularization)
    baseline_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = ease_weights(gram.copy(), args.regularization)
    ours_s = time.perf_counter() - started
    sample = x[:500]
    top = [np.argsort(-(sample @ b), axis=1)[:, :10] for b in (ours, baseline)]
    agreement = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*top)])
    print(f"{args.items:,} items: float64 inverse {baseline_s:.2f} s ({baseline.nbytes / 2**30:.2f} GiB), "
          f"float32 Cholesky {ours_s:.2f} s ({ours.nbytes / 2**30:.2f} GiB); top-10 agreement {agreement:.4f}; "
          f"max |difference| {np.abs(ours - baseline).max():.2e}; process peak "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    ours_rate, baseline_rate = 3600 / ours_s, 3600 / baseline_s  # a rate, so that ratio > 1 is better
    print(f"RESULT ease_solve ours={ours_rate:.1f} baseline={baseline_rate:.1f} ratio={ours_rate / baseline_rate:.3f} "
          "unit=solves/hour")


if __name__ == "__main__":
    main()
