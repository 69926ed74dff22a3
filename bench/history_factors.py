"""The history factor's cost on a home's feature tables: HistoryFactors.fit against the EASE solve it contains.

2T-HGNN's two-tower fits `models.history_factors.HistoryFactors` once per fit (validation on train, the
refit on train + valid): EASE over the binary history of the `--max-items` items most users touched, its
label columns (the home's graph types: podcasts and audiobooks by default) cut to `--rank` by a randomised
SVD. This times, on the periods given, that fit and the user factors of every user (in chunks of
`two_tower.USER_CHUNK`, as offline evaluation and serving build them), and, as the baseline, the plain EASE
solve of the same matrix and columns (`history_factors.label_weights`), the arithmetic no factor can avoid.
It prints the process's peak resident memory after each part.

On a CROSSFADE_HOME whose feature stage has run (read-only):
    python bench/history_factors.py --home /path/to/crossfade_home --periods train
RESULT: ours = factor fits an hour, baseline = EASE solves an hour of the same history (higher is better).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed

import polars as pl  # noqa: E402

from models.history_factors import HistoryFactors, label_weights  # noqa: E402
from models.recommender import PERIODS, FeatureFrames  # noqa: E402
from models.two_tower import USER_CHUNK  # noqa: E402
from warehouse import readers  # noqa: E402
from warehouse.settings import load_settings  # noqa: E402
from warehouse.store import Store  # noqa: E402


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(label: str, work):  # noqa: ANN001, ANN201 (any callable, its result)
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    print(f"{label}: {seconds:.1f} s (process peak {peak_gib():.2f} GiB)", flush=True)
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a CROSSFADE_HOME whose feature stage has run")
    parser.add_argument("--periods", default="train", help=f"comma-separated periods of {PERIODS} the fit reads")
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--regularization", type=float, default=500.0)
    parser.add_argument("--max-items", type=int, default=20_000)
    args = parser.parse_args()
    periods = tuple(p.strip() for p in args.periods.split(",") if p.strip())
    store = Store(args.home / "warehouse" / "crossfade.duckdb")

    def read() -> FeatureFrames:
        with store.read() as con:
            return FeatureFrames(**readers.feature_tables(con))

    frames, _ = timed("feature frames", read)
    history = frames.history(periods)
    label_types = list(load_settings(home=args.home).graph_types)  # the two-tower's labels: every graph type
    labels = frames.items.filter(pl.col("item_type").is_in(label_types))["item_id"].unique().sort()
    print(f"{history.height:,} interaction rows of {periods}, {labels.len():,} label items", flush=True)
    _, baseline_s = timed("baseline: the EASE solve alone (history_factors.label_weights)", lambda: label_weights(
        history, labels, args.regularization, args.max_items)[3].shape)  # its matrices let go before the fit
    factors, ours_s = timed("HistoryFactors.fit", lambda: HistoryFactors.fit(
        history, labels, args.rank, args.regularization, args.max_items))
    users = frames.user_stats["user_id"].unique().sort()

    def user_factors() -> int:
        for start in range(0, users.len(), USER_CHUNK):
            chunk = users.slice(start, USER_CHUNK)  # as TwoTowerModel.user_vectors: the chunk's own rows
            factors.users(chunk, history.join(chunk.to_frame("user_id"), on="user_id", how="semi"))
        return users.len()

    _, users_s = timed(f"user factors of {users.len():,} users", user_factors)
    print(f"rank {factors.rank}, {factors.history_items.len():,} history items, {factors.label_items.len():,} label "
          f"items; fit {ours_s:.1f} s = {ours_s / baseline_s:.2f}x the EASE solve; user factors "
          f"{users_s / max(users.len(), 1) * 1e5:.1f} s per 100,000 users; process peak {peak_gib():.2f} GiB")
    ours_rate, baseline_rate = 3600 / ours_s, 3600 / baseline_s  # rates, so that ratio > 1 is better
    print(f"RESULT history_factors ours={ours_rate:.1f} baseline={baseline_rate:.1f} "
          f"ratio={ours_rate / baseline_rate:.3f} unit=fits/hour")


if __name__ == "__main__":
    main()
