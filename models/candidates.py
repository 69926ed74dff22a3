"""Nightly candidate lists: per user slice the serving plan's model (exact two-tower top-K, or a baseline that
validated better), popularity fallback, short explanations."""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch

from models import protocol
from models.evaluate import PRODUCTION_MODEL, EvaluateConfig, model_builders
from models.recommender import (RECOMMENDATION_SCHEMA, FeatureFrames, consumed_csr, consumed_pairs, embedding_table,
                                positions)
from models.retrieval import candidates_frame, top_k_items
from models.shards import in_shard
from models.two_tower import TwoTowerModel

SERVING_PERIODS = ("train", "valid", "holdout")  # at serve time the whole window through as_of is history
HISTORY_ITEMS = 20  # explanations compare each candidate with the user's most engaged items only
EXPLAIN_FLOATS = 1 << 24  # candidate text floats explained at once (64 MiB; 65,536 users x K 100 x d 384 is 10 GB)
USER_BATCH = 65_536  # users whose tower inputs are built at once; bounds memory on large user tables
FALLBACK_MODEL = "popularity"  # model_version of fallback rows
FALLBACK = "fallback"  # their model
COLUMNS = {
    "user_id": pl.String, "item_id": pl.String, "rank": pl.Int32, "score": pl.Float32,
    "explanation": pl.String, "is_fallback": pl.Boolean, "model_version": pl.String, "model": pl.String,
}


class Recommender(Protocol):
    def recommend(self, user_ids: pl.Series, k: int) -> pl.DataFrame: ...


@dataclass(frozen=True)
class ServingInputs:
    """What candidate generation reads, all as of one date (features built for it)."""

    frames: FeatureFrames
    text_embeddings: pl.DataFrame  # (item_id, embedding): enrich.text_embeddings of items
    as_of: dt.date
    target_type: str
    k: int
    hgnn_embeddings: pl.DataFrame | None = None  # (item_id, embedding) of the promoted bundle
    profile_embeddings: pl.DataFrame | None = None  # (user_id, embedding): enrich.text_embeddings of users

    # Each is computed once per ServingInputs: serving reads them many times over tens of millions of rows.
    def history(self) -> pl.DataFrame:
        return self._history

    def active_users(self) -> pl.Series:
        """Users with any interaction in the window through as_of."""
        return self._active_users

    def catalogue(self) -> pl.DataFrame:
        """Target-type items released before as_of: (item_id, title, language, genres), by item_id."""
        return self._catalogue

    def consumed(self) -> pl.DataFrame:
        """(user_id, item_id) of every target-type item a user touched in the window, skips included."""
        return self._consumed

    def warm_users(self) -> pl.Series:
        """Users who touched the target type in the window: the plan's warm slice; everyone else is cold."""
        return self._warm_users

    @cached_property
    def _history(self) -> pl.DataFrame:
        return self.frames.history(SERVING_PERIODS)

    @cached_property
    def _active_users(self) -> pl.Series:
        return self.history()["user_id"].cast(pl.String).unique().sort()

    @cached_property
    def _catalogue(self) -> pl.DataFrame:
        released = self.frames.released(self.target_type, self.as_of).cast(pl.String).to_frame("item_id")
        return released.join(self.frames.items.select(pl.col("item_id").cast(pl.String), "title", "language", "genres")
                              .unique("item_id"), on="item_id", how="left").sort("item_id")

    @cached_property
    def _consumed(self) -> pl.DataFrame:
        return consumed_pairs(self.history(), self.target_type).cast(pl.String)

    @cached_property
    def _warm_users(self) -> pl.Series:
        return self.consumed()["user_id"].unique()


def generate(inputs: ServingInputs, model: TwoTowerModel | None, model_version: str,
             chunk_users: int | None = None, shard: tuple[int, int] | None = None,
             routed: Mapping[str, tuple[str, Recommender]] | None = None) -> Iterator[pl.DataFrame]:
    """Frames of candidate rows (COLUMNS), a bounded chunk of users at a time, every active user once.

    `routed` maps a slice ('cold', 'warm') to (model name, recommender) when the serving plan serves it by
    a model other than the two-tower: its users get that recommender's top K. The other users the
    two-tower can score (some history item known to it) get its exact top K by dot product. Users left
    without a list, or everyone when `model` is None and nothing is routed, get the popularity fallback
    (is_fallback = true). `shard` = (index, count) keeps the active users of that user shard
    (models.shards) only; popularity, the catalogue and item vectors stay global, so each of them gets
    the list the unsharded run gives.
    """
    users = inputs.active_users() if shard is None else in_shard(inputs.active_users(), *shard)
    catalogue = inputs.catalogue()
    if catalogue.height == 0:
        raise ValueError(f"no {inputs.target_type!r} item is released before {inputs.as_of}; "
                         "check raw.items and target_type")
    consumed = inputs.consumed()
    explainer = Explainer.build(inputs, catalogue)
    if routed:
        warm = inputs.warm_users().implode()
        for slice_name, (name, recommender) in routed.items():
            is_warm = users.is_in(warm)
            slice_users = users.filter(is_warm if slice_name == "warm" else ~is_warm)
            served = []
            for start in range(0, slice_users.len(), USER_BATCH):
                frame = recommender.recommend(slice_users.slice(start, USER_BATCH), inputs.k)
                if frame.height:
                    served.append(frame["user_id"].unique())
                    yield explainer.explain(frame.select("user_id", "item_id", "rank", "score"), model_version, name)
            got = pl.concat(served) if served else slice_users.clear()
            users = users.filter(~users.is_in(slice_users.implode()))
            left = slice_users.filter(~slice_users.is_in(got.implode()))
            if left.len():
                yield fallback_lists(inputs, left, catalogue, consumed)
    scorable = users.clear() if model is None else scorable_users(inputs, users)
    fallback = users.filter(~users.is_in(scorable.implode()))
    if fallback.len():
        yield fallback_lists(inputs, fallback, catalogue, consumed)
    if model is None or scorable.len() == 0:
        return
    tower = TowerLists.build(inputs, model)
    for start in range(0, scorable.len(), USER_BATCH):
        for frame in tower.frames(scorable.slice(start, USER_BATCH), inputs.k, chunk_users):
            yield explainer.explain(frame, model_version, PRODUCTION_MODEL)


@dataclass(frozen=True)
class TowerLists:
    """The promoted two-tower's exact top K over the catalogue, tower inputs built per batch of users."""

    inputs: ServingInputs
    model: TwoTowerModel  # reading the whole window (SERVING_PERIODS)
    item_ids: pl.Series
    item_vectors: torch.Tensor

    @staticmethod
    def build(inputs: ServingInputs, model: TwoTowerModel) -> TowerLists:
        serving = dataclasses.replace(model, config=dataclasses.replace(model.config, periods=SERVING_PERIODS))
        item_ids, item_vectors = serving.item_vectors(inputs.frames, inputs.text_embeddings, inputs.hgnn_embeddings,
                                                      inputs.catalogue()["item_id"])
        return TowerLists(inputs, serving, item_ids, item_vectors)

    def frames(self, users: pl.Series, k: int, chunk_users: int | None = None) -> Iterator[pl.DataFrame]:
        """(user_id, item_id, rank, score) frames of `users` (one batch; see USER_BATCH), a chunk at a time."""
        inputs = self.inputs
        user_ids, user_vectors = self.model.user_vectors(inputs.frames, inputs.text_embeddings,
                                                         inputs.hgnn_embeddings, inputs.profile_embeddings,
                                                         user_ids=users)
        indptr, indices = consumed_csr(inputs.consumed(), user_ids, self.item_ids)
        chunks = top_k_items(user_vectors, self.item_vectors, k, exclude_indptr=indptr, exclude_indices=indices,
                             chunk_users=chunk_users)
        for chunk in chunks:
            yield candidates_frame([chunk], user_ids.cast(pl.String), self.item_ids.cast(pl.String))

    def recommend(self, user_ids: pl.Series, k: int) -> pl.DataFrame:
        """The lists of the users the two-tower can score (scorable_users), as a fusion component reads them."""
        users = scorable_users(self.inputs, pl.Series(list(user_ids), dtype=pl.String))
        frames = [frame for start in range(0, users.len(), USER_BATCH)
                  for frame in self.frames(users.slice(start, USER_BATCH), k)]
        return pl.concat(frames) if frames else pl.DataFrame(schema=RECOMMENDATION_SCHEMA)


def plan_routes(inputs: ServingInputs, plan: Mapping[str, Mapping[str, Any]] | None,
                config: EvaluateConfig, model: TwoTowerModel | None = None) -> dict[str, tuple[str, Recommender]]:
    """The plan's slices served by a model other than 2T-HGNN, each with its recommender, fitted on the whole
    window through as_of with the settings `config` carries (the ones chosen on validation). A fusion reads
    2T-HGNN's lists from `model`, the promoted two-tower, never from a refit."""
    steps = {name: step["model"] for name, step in (plan or {}).items() if step["model"] != PRODUCTION_MODEL}
    if not steps:
        return {}
    if "fusion" in steps.values() and PRODUCTION_MODEL in config.fusion.models and model is None:
        raise ValueError(f"the plan serves a fusion of {list(config.fusion.models)} but no promoted two-tower "
                         "was given; pass the bundle's model")
    production = None if model is None else (lambda: TowerLists.build(inputs, model))
    builders = protocol.cached(model_builders(
        inputs.frames, inputs.hgnn_embeddings, inputs.text_embeddings, inputs.profile_embeddings,
        inputs.catalogue()["item_id"], config, None, SERVING_PERIODS, production))
    return {name: (chosen, builders[chosen]()) for name, chosen in steps.items()}


def scorable_users(inputs: ServingInputs, users: pl.Series) -> pl.Series:
    """Users with at least one history item the model has a vector for (text or HGNN).

    A user whose every item is missing from the embedding tables (say, only items landed after the last
    enrichment) would be placed by demographics alone; popularity in their language and genres beats that.
    """
    known = inputs.text_embeddings.select(pl.col("item_id").cast(pl.String))
    if inputs.hgnn_embeddings is not None:
        known = pl.concat([known, inputs.hgnn_embeddings.select(pl.col("item_id").cast(pl.String))])
    history = inputs.history().select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
    ok = history.join(known.unique(), on="item_id", how="semi")["user_id"].unique()
    return users.filter(users.is_in(ok.implode()))


@dataclass(frozen=True)
class Explainer:
    """'because you listened to <title>': the user's history item whose text is nearest to the candidate's."""

    history: pl.DataFrame  # (user_id, item_id, verb, h): each user's most engaged items, h = 0..H-1
    titles: pl.DataFrame  # (item_id, title) of every item
    text_ids: pl.Series
    text: torch.Tensor  # (n, d) unit text vectors

    @staticmethod
    def build(inputs: ServingInputs, catalogue: pl.DataFrame) -> Explainer:
        ids, text = embedding_table(inputs.text_embeddings, "item_id")
        engaged = (
            inputs.history().select(
                pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String), "count_events",
                pl.when(pl.col("is_played")).then(pl.lit("listened to")).otherwise(pl.lit("showed interest in"))
                .alias("verb"))
            .group_by("user_id", "item_id").agg(pl.col("count_events").sum(), pl.col("verb").min())
            .join(ids.to_frame("item_id"), on="item_id", how="semi")
            .sort(["user_id", "count_events", "item_id"], descending=[False, True, False])
            .group_by("user_id", maintain_order=True).head(HISTORY_ITEMS)
            .with_columns(h=pl.int_range(pl.len()).over("user_id"))
            .drop("count_events")
        )
        titles = inputs.frames.items.select(pl.col("item_id").cast(pl.String),
                                            pl.coalesce(pl.col("title"), pl.col("item_id")).alias("title"))
        return Explainer(engaged, titles.unique("item_id"), ids, text)

    @cached_property
    def _padded(self) -> torch.Tensor:
        """The text vectors with a zero row appended (row n), for slots without an item."""
        return torch.cat([self.text, torch.zeros(1, self.text.shape[1])])

    def explain(self, frame: pl.DataFrame, model_version: str, model: str) -> pl.DataFrame:
        """The frame (user_id, item_id, rank, score) with explanation, is_fallback = false, model_version and model.

        Each history item's sentence is written once; a candidate row takes its nearest history item's
        sentence by position, so rows are never joined back by key. Only the similarity runs a slice of users
        at a time, so the candidate text vectors held at once (users x K x d floats) stay near EXPLAIN_FLOATS.
        """
        users = frame["user_id"].unique(maintain_order=True)
        k = max(int(frame["rank"].max() or 0), 1)
        row_of = positions(users, "user_id").rename({"row": "u"})
        text_row = positions(self.text_ids, "item_id").rename({"row": "t"})
        ranked = (frame.select("user_id", "item_id", "rank")
                  .join(row_of, on="user_id", how="left", maintain_order="left")
                  .join(text_row, on="item_id", how="left", maintain_order="left"))
        order = None  # lists arrive user by user; any other order is sorted by user here and restored at the end
        if ranked.height > 1 and not bool((np.diff(ranked["u"].to_numpy()) >= 0).all()):
            order = np.argsort(ranked["u"].to_numpy(), kind="stable")
            ranked = ranked[order]
        history = (self.history.join(row_of, on="user_id").join(text_row, on="item_id", how="left")
                   .join(self.titles, on="item_id", how="left").sort("u", "h")
                   .with_columns(sentence=pl.format("because you {} {}", pl.col("verb"), pl.col("title"))))
        best = np.zeros(ranked.height, dtype=np.int64)  # per ranked row: h of the nearest history item
        has_history = np.zeros(ranked.height, dtype=bool)
        step = max(1, EXPLAIN_FLOATS // (k * max(self.text.shape[1], 1)))
        ranked_u, history_u = ranked["u"].to_numpy(), history["u"].to_numpy()
        # Gathered vectors land in buffers reused by every slice: fresh ones cost a page fault a page, about
        # half the time of the gather itself.
        buffers = (torch.empty(min(step, users.len()) * k, self.text.shape[1]),
                   torch.empty(min(step, users.len()) * HISTORY_ITEMS, self.text.shape[1]))
        for lo in range(0, users.len(), step):
            hi = min(lo + step, users.len())
            r0, r1 = np.searchsorted(ranked_u, [lo, hi])
            h0, h1 = np.searchsorted(history_u, [lo, hi])
            best[r0:r1], has_history[r0:r1] = self._nearest(ranked.slice(r0, r1 - r0), history.slice(h0, h1 - h0),
                                                            lo, hi - lo, k, buffers)
        # (user, h) -> row of `history`; the row past the end is a null sentence
        slot = np.full((users.len(), HISTORY_ITEMS), history.height, dtype=np.int64)
        slot[history_u, history["h"].to_numpy()] = np.arange(history.height)
        chosen = np.where(has_history, slot[ranked_u, best], history.height)
        sentences = history["sentence"].extend(pl.Series([None], dtype=pl.String))
        explanation = sentences.gather(chosen if order is None else chosen[np.argsort(order)])
        return (frame.with_columns(explanation=explanation.fill_null("picked from your listening profile"),
                                   is_fallback=pl.lit(False), model_version=pl.lit(model_version), model=pl.lit(model))
                .select(list(COLUMNS)).cast(COLUMNS))  # type: ignore[arg-type]

    def _nearest(self, ranked: pl.DataFrame, history: pl.DataFrame, first: int, n_users: int,
                 k: int, buffers: tuple[torch.Tensor, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """Per ranked row of users first .. first + n_users - 1 (column u; t its text row or null): the h of the
        user's history item whose text is nearest the candidate's, and whether the user has any such item."""
        # Text rows of each user's history (U, H) and candidates (U, K); absent slots point at a zero row.
        zero = self.text.shape[0]
        u, h = history["u"].to_torch() - first, history["h"].cast(pl.Int64).to_torch()
        hist_grid = torch.full((n_users, HISTORY_ITEMS), zero, dtype=torch.int64)
        hist_grid[u, h] = history["t"].fill_null(zero).to_torch()
        cu, cr = ranked["u"].to_torch() - first, ranked["rank"].cast(pl.Int64).to_torch() - 1
        cand_grid = torch.full((n_users, k), zero, dtype=torch.int64)
        cand_grid[cu, cr] = ranked["t"].fill_null(zero).to_torch()
        present = hist_grid != zero
        # one gather per side, (U, K, d) and (U, H, d), then (U, K, H) cosines; absent history never wins
        d = self.text.shape[1]
        candidates = torch.index_select(self._padded, 0, cand_grid.flatten(), out=buffers[0][: cand_grid.numel()])
        histories = torch.index_select(self._padded, 0, hist_grid.flatten(), out=buffers[1][: hist_grid.numel()])
        similarity = torch.bmm(candidates.view(n_users, k, d), histories.view(n_users, HISTORY_ITEMS, d).transpose(1, 2))
        similarity.masked_fill_(~present[:, None, :], -torch.inf)
        return similarity.argmax(2)[cu, cr].numpy(), present.any(1)[cu].numpy()


def user_tastes(inputs: ServingInputs, users: pl.Series) -> pl.DataFrame:
    """(user_id, language, genre) per user: most engaged language and target-type genre, '' where none."""
    target_genres = inputs.frames.items.filter(pl.col("item_type") == inputs.target_type)["genres"].explode().unique()
    engaged = (inputs.history().select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String),
                                       "count_events")
               .join(users.cast(pl.String).to_frame("user_id"), on="user_id", how="semi")
               .join(inputs.frames.items.select(pl.col("item_id").cast(pl.String), "language", "genres"),
                     on="item_id"))

    def top(column: pl.DataFrame, name: str) -> pl.DataFrame:
        return (column.group_by("user_id", name).agg(pl.col("count_events").sum())
                .sort(["user_id", "count_events", name], descending=[False, True, False])
                .group_by("user_id", maintain_order=True).first().select("user_id", name))

    language = top(engaged.drop_nulls("language"), "language")
    genres = engaged.explode("genres").rename({"genres": "genre"}).filter(pl.col("genre").is_in(target_genres.implode()))
    return (users.cast(pl.String).to_frame("user_id")
            .join(language, on="user_id", how="left").join(top(genres, "genre"), on="user_id", how="left")
            .with_columns(pl.col("language", "genre").fill_null("")))


def fallback_lists(inputs: ServingInputs, users: pl.Series, catalogue: pl.DataFrame,
                   consumed: pl.DataFrame) -> pl.DataFrame:
    """Popularity within the user's language and genre: items matching both first, then language, then genre.

    Lists are ranked per (language, genre) segment, so the work grows with segments x catalogue, not users.
    Score = tier (2 for the language, 1 for the genre) + popularity percentile in [0, 1).
    """
    tastes = user_tastes(inputs, users)
    listeners = (inputs.history().filter(pl.col("item_type") == inputs.target_type)
                 .group_by(pl.col("item_id").cast(pl.String)).agg(pl.col("user_id").n_unique().alias("listeners")))
    items = (catalogue.join(listeners, on="item_id", how="left")
             .with_columns(pl.col("listeners").fill_null(0))
             .with_columns(percentile=(pl.col("listeners").rank("ordinal") - 1) / pl.len()))
    extra = int(consumed.join(tastes, on="user_id", how="semi").group_by("user_id").len()["len"].max() or 0)
    language_match = pl.col("item_language") == pl.col("language")
    genre_match = pl.col("genres").list.contains(pl.col("genre"))
    segments = (
        tastes.select("language", "genre").unique()
        .join(items.rename({"language": "item_language"}), how="cross")
        .with_columns(tier=language_match.cast(pl.Int32) * 2 + genre_match.fill_null(False).cast(pl.Int32))
        .with_columns(score=(pl.col("tier") + pl.col("percentile")).cast(pl.Float32))
        .sort(["language", "genre", "score", "item_id"], descending=[False, False, True, False])
        .group_by("language", "genre", maintain_order=True).head(inputs.k + extra)
    )
    explanation = (
        pl.when(pl.col("tier") == 3).then(pl.format("popular with {} listeners who like {}", "language", "genre"))
        .when(pl.col("tier") == 2).then(pl.format("popular with {} listeners", "language"))
        .when(pl.col("tier") == 1).then(pl.format("popular with listeners who like {}", "genre"))
        .otherwise(pl.lit("popular on the platform"))
    )
    return (
        tastes.join(segments, on=["language", "genre"])
        .join(consumed, on=["user_id", "item_id"], how="anti")
        .sort(["user_id", "score", "item_id"], descending=[False, True, False])
        .group_by("user_id", maintain_order=True).head(inputs.k)
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id"), explanation=explanation,
                      is_fallback=pl.lit(True), model_version=pl.lit(FALLBACK_MODEL), model=pl.lit(FALLBACK))
        .select(list(COLUMNS)).cast(COLUMNS)  # type: ignore[arg-type]
    )
