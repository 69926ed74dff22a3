"""Rank fusion: one list from the lists of several recommenders, weighted reciprocal rank (Cormack et al., 2009).

score(u, i) = sum over components m of weight_m / (offset + rank_m(u, i)), over each component's top
`depth`; an item missing from a list adds nothing. Ties go to the smaller item_id. Each component leaves
out what the user consumed, so the fused list does too. A user no component has a list for gets none.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from models.recommender import RECOMMENDATION_SCHEMA


@dataclass(frozen=True)
class FusionConfig:
    # Component model names (models.evaluate.MODELS) and their weights, in the same order.
    models: tuple[str, ...] = ("item_knn", "ease", "two_tower_hgnn")
    weights: tuple[float, ...] = (1.0, 1.0, 0.5)
    offset: float = 20.0  # the reciprocal rank's constant: larger flattens the gap between rank 1 and rank 10
    depth: int = 100  # each component's list length read

    def __post_init__(self) -> None:
        # a registry row stores the tuples as JSON lists
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if not self.models or len(self.models) != len(self.weights):
            raise ValueError(f"FusionConfig needs one weight per model (got {self.models} and {self.weights})")
        if "fusion" in self.models:
            raise ValueError("a fusion cannot be its own component")
        if min(self.weights) <= 0 or self.offset < 0 or self.depth < 1:
            raise ValueError(f"FusionConfig needs weights > 0, offset >= 0, depth >= 1 (got {self})")


def fuse(lists: Sequence[pl.DataFrame], weights: Sequence[float], offset: float, k: int) -> pl.DataFrame:
    """Top-k (user_id, item_id, rank, score) per user of the weighted reciprocal-rank sum of `lists`."""
    parts = [frame.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String),
                          (weight / (offset + pl.col("rank").cast(pl.Float64))).alias("score"))
             for frame, weight in zip(lists, weights, strict=True) if frame.height]
    if not parts:
        return pl.DataFrame(schema=RECOMMENDATION_SCHEMA)
    summed = pl.concat(parts).group_by("user_id", "item_id").agg(pl.col("score").sum())
    ranked = (summed.sort(["user_id", "score", "item_id"], descending=[False, True, False])
              .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id")))
    return ranked.filter(pl.col("rank") <= k).select("user_id", "item_id", "rank", "score").cast(
        RECOMMENDATION_SCHEMA)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FusedRecommender:
    """The recommend surface over fused lists: each component asked for its top `config.depth`."""

    components: Mapping[str, Any]  # name -> recommender, in config.models order
    config: FusionConfig

    def recommend(self, user_ids: Sequence[str] | pl.Series, k: int) -> pl.DataFrame:
        lists = [self.components[name].recommend(user_ids, max(k, self.config.depth)) for name in self.config.models]
        return fuse(lists, self.config.weights, self.config.offset, k)
