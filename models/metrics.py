"""Offline ranking metrics of top-N lists against holdout targets, per user slice, with standard errors.

Population: every user with at least one holdout target. A user without a list counts as a miss
(0) in every per-user metric, so a model that cannot serve cold users scores 0 on them; `served`
says what share of the slice got a list at all.

Slices (`is_warm` from features.user_stats; a user missing there counts as cold):
- all: every user with a target; warm / cold: split by is_warm.
- long_tail: users with at least one target of popularity tier 3, 4 or 5 (features.item_stats over
  the train period; an item without a row is tier 5, it had no listeners). In this slice only those
  long-tail targets are relevant: a hit on a head item does not count.

Per-user metrics (ranks are 1-based, lists cut at `list_length`, the paper's 100):
- hr@10: 1 if any relevant item is in the top 10.
- mrr@N: 1 / rank of the first relevant item in the top N, 0 if none.
- recall@K: relevant items in the top K / relevant items.
- ndcg@K: sum over hits at rank r <= K of 1/log2(r + 1), divided by the same sum for the ideal list
  (all min(relevant, K) relevant items first).
- served: 1 if the user got a non-empty list.
value is the mean over the slice's users, std_error the sample standard deviation / sqrt(users).
coverage@N is a set statistic: distinct items in the slice users' top N / catalogue_size (no std_error).

Every slice is reported: one without users (no cold user with a target, no long-tail target, ...)
has a row per metric with users 0 and value null, so readers see it is empty rather than missing.
"""
from __future__ import annotations

import math

import polars as pl

SLICES = ("all", "warm", "cold", "long_tail")
LONG_TAIL_MIN_TIER = 3
METRICS_SCHEMA = {"slice": pl.String, "metric": pl.String, "value": pl.Float64, "std_error": pl.Float64,
                  "users": pl.Int64}


def cutoffs(k: int) -> list[int]:
    """Recall and NDCG cut-offs: 10, 20 and the configured K."""
    return sorted({10, 20, k})


def offline_metrics(recommendations: pl.DataFrame, targets: pl.DataFrame, user_stats: pl.DataFrame,
                    item_stats: pl.DataFrame, catalogue_size: int, k: int = 100,
                    list_length: int = 100) -> pl.DataFrame:
    """(slice, metric, value, std_error, users) from lists (user_id, item_id, rank) and targets (user_id, item_id)."""
    if k > list_length or list_length < 10:
        raise ValueError(f"need 10 <= k <= list_length (got k={k}, list_length={list_length}); lengthen the lists")
    if catalogue_size < 1:
        raise ValueError(f"catalogue_size must be positive (got {catalogue_size})")
    relevant = slice_targets(targets, user_stats, item_stats)
    if relevant.height == 0:
        return empty_slices(pl.DataFrame(schema=METRICS_SCHEMA), k, list_length)
    lists = recommendations.filter(pl.col("rank") <= list_length).select("user_id", "item_id", "rank")
    per_user = _per_user(relevant, lists, k, list_length)
    names = [c for c in per_user.columns if c not in ("slice", "user_id")]
    means = (per_user.unpivot(index=["slice", "user_id"], on=names, variable_name="metric")
             .group_by("slice", "metric", maintain_order=True)
             .agg(pl.col("value").cast(pl.Float64).mean(),
                  (pl.col("value").cast(pl.Float64).std() / pl.len().cast(pl.Float64).sqrt()).alias("std_error"),
                  pl.len().cast(pl.Int64).alias("users")))
    coverage = (relevant.select("slice", "user_id").unique()
                .join(lists, on="user_id", how="left")
                .group_by("slice", maintain_order=True)
                .agg((pl.col("item_id").drop_nulls().n_unique() / catalogue_size).alias("value"),
                     pl.col("user_id").n_unique().cast(pl.Int64).alias("users"))
                .with_columns(metric=pl.lit(f"coverage@{list_length}"), std_error=pl.lit(None, pl.Float64)))
    scored = (pl.concat([means.select(METRICS_SCHEMA.keys()), coverage.select(METRICS_SCHEMA.keys())])
              .cast(METRICS_SCHEMA))  # type: ignore[arg-type]
    return empty_slices(scored, k, list_length)


def metric_names(k: int, list_length: int) -> list[str]:
    """Every metric offline_metrics reports, in its order."""
    ks = cutoffs(k)
    return ["hr@10", f"mrr@{list_length}", *[f"recall@{c}" for c in ks], *[f"ndcg@{c}" for c in ks], "served",
            f"coverage@{list_length}"]


def empty_slices(scored: pl.DataFrame, k: int, list_length: int) -> pl.DataFrame:
    """`scored` plus, for every slice without users, a row per metric with users 0 and value null; in SLICES order."""
    present = set(scored["slice"].to_list())
    empty = [{"slice": name, "metric": metric, "value": None, "std_error": None, "users": 0}
             for name in SLICES if name not in present for metric in metric_names(k, list_length)]
    order = pl.DataFrame({"slice": list(SLICES)}).with_row_index("o")
    return (pl.concat([scored, pl.DataFrame(empty, schema=METRICS_SCHEMA)])
            .join(order, on="slice").sort("o", maintain_order=True).drop("o"))


def slice_targets(targets: pl.DataFrame, user_stats: pl.DataFrame, item_stats: pl.DataFrame) -> pl.DataFrame:
    """(slice, user_id, item_id): the relevant targets of each user in each slice they belong to."""
    base = (targets.select("user_id", "item_id").unique()
            .join(user_stats.select("user_id", "is_warm"), on="user_id", how="left")
            .join(item_stats.select("item_id", "popularity_tier"), on="item_id", how="left")
            .with_columns(pl.col("is_warm").fill_null(False), pl.col("popularity_tier").fill_null(5)))
    parts = {
        "all": base,
        "warm": base.filter(pl.col("is_warm")),
        "cold": base.filter(~pl.col("is_warm")),
        "long_tail": base.filter(pl.col("popularity_tier") >= LONG_TAIL_MIN_TIER),
    }
    return pl.concat([rows.select(pl.lit(name).alias("slice"), "user_id", "item_id") for name, rows in parts.items()])


def _per_user(relevant: pl.DataFrame, lists: pl.DataFrame, k: int, list_length: int) -> pl.DataFrame:
    """One row per (slice, user) with every per-user metric as a column."""
    ks = cutoffs(k)
    rank = pl.col("rank")
    hits = relevant.join(lists, on=["user_id", "item_id"], how="left")
    gain = 1.0 / (rank.cast(pl.Float64) + 1.0).log(2)
    stats = hits.group_by("slice", "user_id", maintain_order=True).agg(
        pl.len().alias("n"),
        rank.min().alias("first"),
        *[(rank <= c).sum().alias(f"hits@{c}") for c in ks],
        *[gain.filter(rank <= c).sum().alias(f"dcg@{c}") for c in ks],
    )
    served = lists.select("user_id").unique().with_columns(served=pl.lit(1.0))
    ideal = [0.0]
    for r in range(1, max(ks) + 1):
        ideal.append(ideal[-1] + 1.0 / math.log2(r + 1))  # ideal[m] = DCG of m hits at ranks 1..m
    first = pl.col("first")
    return stats.join(served, on="user_id", how="left").select(
        "slice", "user_id",
        (first <= 10).fill_null(False).cast(pl.Float64).alias("hr@10"),
        (1.0 / first.cast(pl.Float64)).fill_null(0.0).alias(f"mrr@{list_length}"),
        *[(pl.col(f"hits@{c}") / pl.col("n")).alias(f"recall@{c}") for c in ks],
        *[(pl.col(f"dcg@{c}") / pl.col("n").clip(upper_bound=c).replace_strict(
            list(range(c + 1)), ideal[:c + 1], return_dtype=pl.Float64)).alias(f"ndcg@{c}") for c in ks],
        pl.col("served").fill_null(0.0),
    )
