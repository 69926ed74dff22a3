"""Feature frames every recommender reads, pooled user histories, and the one ranking surface they share."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property

import numpy as np
import polars as pl
import torch

from models.retrieval import candidates_frame, top_k_items

WEAK_FLAGS = ("is_followed", "is_saved", "is_previewed", "is_purchased")
PERIODS = ("train", "valid", "holdout")  # features.splits, in time order (README, "Evaluation protocol")
RECOMMENDATION_SCHEMA = {"user_id": pl.String, "item_id": pl.String, "rank": pl.Int32, "score": pl.Float32}


@dataclass(frozen=True)
class FeatureFrames:
    """Polars frames of features.interactions, user_stats, item_stats, splits, raw.items and enrich.item_topics."""

    interactions: pl.DataFrame
    user_stats: pl.DataFrame
    item_stats: pl.DataFrame
    items: pl.DataFrame  # raw.items: genres and release dates live only there
    splits: pl.DataFrame
    # enrich.item_topics (item_id, topics list[str]): the LLM's topics where they passed their quality floor,
    # else the taxonomy's or zero-shot's; None before enrichment has run (models then read no topics).
    item_topics: pl.DataFrame | None = None

    def cut(self, split: str = "holdout") -> datetime:
        """Start of a period (default the holdout): nothing at or after it is known to a model scored on it."""
        starts = self.splits.filter(pl.col("split") == split)["start_at"]
        if starts.len() != 1:
            raise ValueError(f"features.splits needs exactly one {split!r} row (got {starts.len()}); rebuild features")
        return starts.item()

    def history(self, periods: Sequence[str], use_weak_signals: bool = True) -> pl.DataFrame:
        """Interactions of the periods. Without weak signals only played items remain, weak flags cleared."""
        unknown = set(periods) - set(PERIODS)
        if unknown:
            raise ValueError(f"periods are {list(PERIODS)} (got {sorted(unknown)})")
        if self.periods_present <= set(periods):
            rows = self.interactions  # every row qualifies: no filtered copy (44.9M rows at 1M users)
        else:
            rows = self.interactions.filter(pl.col("period").is_in(list(periods)))
        if use_weak_signals:
            return rows
        return rows.filter(pl.col("is_played")).with_columns(pl.lit(False).alias(flag) for flag in WEAK_FLAGS)

    @cached_property
    def periods_present(self) -> frozenset[str]:
        """The distinct periods of the interaction rows."""
        return frozenset(self.interactions["period"].unique().to_list())

    def released(self, item_type: str, before: date | datetime) -> pl.Series:
        """Ids of the items of one type released before a moment; an unknown release date counts as released."""
        day = before.date() if isinstance(before, datetime) else before
        return self.items.filter(
            (pl.col("item_type") == item_type)
            & (pl.col("release_date").is_null() | (pl.col("release_date") < day))
        )["item_id"].unique().sort()


def topic_vocabulary(item_topics: pl.DataFrame | None, item_ids: pl.Series, limit: int) -> list[str]:
    """The `limit` topics most of `item_ids` carry in `item_topics`, sorted; empty without topics or limit."""
    if item_topics is None or limit <= 0:
        return []
    counts = (_clean_topics(item_topics).join(item_ids.cast(pl.String).to_frame("item_id"), on="item_id", how="semi")
              .group_by("topic").agg(pl.col("item_id").n_unique().alias("n")))
    return sorted(counts.sort(["n", "topic"], descending=[True, False]).head(limit)["topic"].to_list())


def topic_table(item_topics: pl.DataFrame | None, vocabulary: list[str]) -> tuple[pl.Series, torch.Tensor]:
    """Ids and an (n, T) float32 multi-hot over `vocabulary` of every item with any topic (an item whose topics
    are all outside the vocabulary has a zero row); topics compare lower-cased and trimmed."""
    if item_topics is None or not vocabulary:
        return pl.Series("item_id", [], pl.String), torch.zeros(0, len(vocabulary))
    pairs = _clean_topics(item_topics)
    ids = pairs["item_id"].unique().sort()
    hits = (pairs.join(positions(ids, "item_id"), on="item_id")
            .join(positions(pl.Series(vocabulary), "topic").rename({"row": "t"}), on="topic"))
    table = torch.zeros(ids.len(), len(vocabulary))  # (n, T)
    table[hits["row"].to_torch(), hits["t"].to_torch()] = 1.0
    return ids, table


def _clean_topics(item_topics: pl.DataFrame) -> pl.DataFrame:
    """(item_id, topic) pairs, one per distinct lower-cased, trimmed, non-empty topic of an item."""
    return (item_topics.select(pl.col("item_id").cast(pl.String), pl.col("topics").alias("topic")).explode("topic")
            .with_columns(pl.col("topic").cast(pl.String).str.to_lowercase().str.strip_chars())
            .filter(pl.col("topic").is_not_null() & (pl.col("topic") != "")).unique())


def embedding_table(frame: pl.DataFrame, key: str) -> tuple[pl.Series, torch.Tensor]:
    """Ids and an (n, d) float32 matrix from a frame of (key, embedding list[float]); null rows are skipped."""
    rows = frame.select(key, "embedding").filter(pl.col("embedding").is_not_null())
    if rows[key].is_duplicated().any():
        dup = rows.filter(rows[key].is_duplicated())[key][0]
        raise ValueError(f"embeddings need one row per {key} (got {dup!r} more than once); keep one model_version")
    lengths = rows["embedding"].list.len()
    if rows.height and lengths.min() != lengths.max():
        raise ValueError(f"embeddings differ in length (got {lengths.min()} to {lengths.max()}); "
                         "re-embed with one model")
    dim = int(lengths[0]) if rows.height else 0
    values = rows["embedding"].explode().cast(pl.Float32).to_torch().reshape(rows.height, dim)  # (n, d)
    return rows[key].cast(pl.String), values


def positions(ids: pl.Series, name: str) -> pl.DataFrame:
    """A lookup frame (name, row) giving each id its row in a matrix ordered like `ids`."""
    return pl.DataFrame({name: ids.cast(pl.String), "row": pl.int_range(ids.len(), dtype=pl.Int64, eager=True)})


def consumed_csr(consumed: pl.DataFrame, user_ids: pl.Series, item_ids: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """CSR over `user_ids` rows: row r lists, once each and in order, the rows of `item_ids` that user r
    consumed (pairs of `consumed`), so a top-K over those items can leave them out."""
    pairs = (
        consumed.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
        .join(positions(user_ids, "user_id").rename({"row": "u"}), on="user_id")
        .join(positions(item_ids, "item_id").rename({"row": "i"}), on="item_id")
        .unique(["u", "i"]).sort("u", "i")
    )
    counts = np.bincount(pairs["u"].to_numpy(), minlength=user_ids.len())
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, pairs["i"].to_numpy().astype(np.int64)


def mean_by_user(
    pairs: pl.DataFrame, user_ids: pl.Series, item_ids: pl.Series, table: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of `table` rows over each user's items in `user_ids` order: (U, d) means (zeros without items), (U,) counts.

    `pairs` holds (user_id, item_id); `table` row j embeds `item_ids[j]`; items without a row are ignored.
    """
    index = (
        pairs.select("user_id", "item_id").unique()
        .join(positions(user_ids, "user_id").rename({"row": "u"}), on="user_id")
        .join(positions(item_ids, "item_id").rename({"row": "i"}), on="item_id")
        .sort("u", "i")  # a fixed summation order keeps seeded runs identical
    )
    u = index["u"].to_torch()
    i = index["i"].to_torch()
    sums = torch.zeros(user_ids.len(), table.shape[1]).index_add_(0, u, table[i])  # (U, d)
    counts = torch.zeros(user_ids.len()).index_add_(0, u, torch.ones(len(u)))  # (U,)
    return sums / counts.clamp(min=1).unsqueeze(1), counts


def consumed_pairs(history: pl.DataFrame, item_type: str) -> pl.DataFrame:
    """(user_id, item_id) of every item of a type the user touched in `history`, weak signals and skips included."""
    return history.filter(pl.col("item_type") == item_type).select("user_id", "item_id").unique()


@dataclass(frozen=True)
class VectorRecommender:
    """Ranks items for users by dot product: the surface every crossfade recommender offers.

    A user without a row in `user_vectors` gets no list (not even a fallback); callers see it as absent.
    """

    user_ids: pl.Series  # (U,)
    user_vectors: torch.Tensor  # (U, d)
    item_ids: pl.Series  # (I,) only the items this model may recommend
    item_vectors: torch.Tensor  # (I, d)
    consumed: pl.DataFrame  # (user_id, item_id) left out of a user's list when exclude_consumed

    def recommend(self, user_ids: Sequence[str] | pl.Series, k: int, exclude_consumed: bool = True) -> pl.DataFrame:
        """Top-k (user_id, item_id, rank 1..k, score) per requested user that has a vector, best first."""
        wanted = pl.DataFrame({"user_id": pl.Series(list(user_ids), dtype=pl.String)}).unique(maintain_order=True)
        rows = wanted.join(positions(self.user_ids, "user_id"), on="user_id", maintain_order="left")
        if rows.height == 0 or self.item_ids.len() == 0:
            return pl.DataFrame(schema=RECOMMENDATION_SCHEMA)
        users = self.user_vectors[rows["row"].to_torch()]  # (R, d)
        indptr = indices = None
        if exclude_consumed:
            indptr, indices = consumed_csr(self.consumed, rows["user_id"], self.item_ids)
        chunks = top_k_items(users, self.item_vectors, k, exclude_indptr=indptr, exclude_indices=indices,
                             chunk_users=1024)
        frame = candidates_frame(chunks, rows["user_id"], self.item_ids.cast(pl.String))
        return frame.cast(RECOMMENDATION_SCHEMA)  # type: ignore[arg-type]

