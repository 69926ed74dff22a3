"""Two-tower inputs: categorical ids and one dense vector per user and per item, built from feature frames."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import polars as pl
import torch

from models.recommender import WEAK_FLAGS, mean_by_user, positions, topic_table, topic_vocabulary

Table = tuple[pl.Series, torch.Tensor]  # ids (n,), float32 matrix (n, d)


@dataclass(frozen=True)
class Vocabularies:
    """Values seen at training time; index 0 stands for unknown, value i of a list for index i + 1."""

    age_bucket: list[str]
    country: list[str]
    language: list[str]
    genre: list[str]
    history_item: list[str] = field(default_factory=list)  # items with a learned history embedding
    # Topics of enrich.item_topics the towers read (item multi-hot, user topic shares); empty = no topic columns.
    topic: list[str] = field(default_factory=list)

    @staticmethod
    def build(user_stats: pl.DataFrame, items: pl.DataFrame, item_types: Sequence[str],
              max_genres: int, history: pl.DataFrame | None = None, max_history_items: int = 0,
              item_topics: pl.DataFrame | None = None, max_topics: int = 0) -> Vocabularies:
        targets = items.filter(pl.col("item_type").is_in(list(item_types)))
        genre_counts = targets["genres"].explode().drop_nulls().value_counts(sort=True, name="n")
        # Rare genres beyond max_genres fall into 'unknown' so the multi-hot stays a fixed, small width.
        genres = genre_counts.sort(["n", "genres"], descending=[True, False]).head(max_genres)["genres"]
        return Vocabularies(
            age_bucket=_values(user_stats["age_bucket"]),
            country=_values(user_stats["country"]),
            language=_values(targets["language"]),
            genre=sorted(genres.to_list()),
            history_item=_history_vocabulary(history, max_history_items),
            # The topics most items of every type carry: podcasts' topics reach the user tower as shares.
            topic=[] if item_topics is None else topic_vocabulary(item_topics, items["item_id"], max_topics),
        )

    def to_dict(self) -> dict[str, list[str]]:
        return asdict(self)


@dataclass(frozen=True)
class TowerInputs:
    """Inputs of one tower for n entities, rows in `ids` order."""

    ids: pl.Series  # (n,)
    categorical: torch.Tensor  # (n, c) int64, 0 = unknown
    dense: torch.Tensor  # (n, d) float32
    bags: torch.Tensor | None = None  # (n, types, length) int32 rows of Vocabularies.history_item + 1, 0 = none


def user_inputs(
    user_ids: pl.Series,
    history: pl.DataFrame,
    user_stats: pl.DataFrame,
    vocab: Vocabularies,
    text: Table,
    graph: Table,
    profile: Table | None,
    profile_dim: int,
    item_types: Sequence[str],
    graph_types: Sequence[str],
    music_type: str,
    bag_length: int = 0,
    item_topics: pl.DataFrame | None = None,
) -> TowerInputs:
    """User tower inputs from the history each user is allowed to see.

    categorical = (age bucket, country); dense = [music taste (d_text) | mean graph embedding per graph
    type (d_graph each) | mean graph embedding of weakly signalled items (d_graph) | log1p counts of
    follows, saves, previews, purchases per type | log1p plays and items per type | topic shares
    (len(vocab.topic), present when the vocabulary has topics) | profile (profile_dim) | has profile (1,
    present when profile_dim > 0)]. `graph` is the HGNN table, or the text table for the model without
    HGNN. Every user in `user_ids` gets a row, zeros where nothing is known.
    """
    ids = user_ids.cast(pl.String)
    demo = ids.to_frame("user_id").join(user_stats.select("user_id", "age_bucket", "country"), on="user_id",
                                        how="left", maintain_order="left")
    categorical = torch.stack([_lookup(demo["age_bucket"], vocab.age_bucket),
                               _lookup(demo["country"], vocab.country)], dim=1)  # (U, 2)
    music = history.filter((pl.col("item_type") == music_type) & pl.col("is_played"))
    parts = [mean_by_user(music, ids, *text)[0]]  # (U, d_text)
    for item_type in graph_types:
        parts.append(mean_by_user(history.filter(pl.col("item_type") == item_type), ids, *graph)[0])
    weak = history.filter(pl.any_horizontal(WEAK_FLAGS))
    parts.append(mean_by_user(weak, ids, *graph)[0])  # (U, d_graph)
    parts.append(_activity(ids, history, item_types))
    if vocab.topic:
        parts.append(topic_shares(ids, history, item_topics, vocab.topic))
    if profile_dim:
        profile_rows, has_profile = aligned_rows(ids, profile, profile_dim)
        parts += [profile_rows, has_profile.unsqueeze(1).float()]
    bags = history_bags(ids, history, vocab.history_item, item_types, bag_length) if bag_length else None
    return TowerInputs(ids, categorical, torch.cat(parts, dim=1), bags)


def topic_shares(user_ids: pl.Series, history: pl.DataFrame, item_topics: pl.DataFrame | None,
                 vocabulary: list[str]) -> torch.Tensor:
    """(U, T): per user and topic, the share of their distinct history items with any topic that carry it.

    Weighted as the other pooled history features (mean_by_user): every distinct item counts once, whatever
    its plays; `history` is what the user may see (labels hidden, weak signals per the config). Zeros for
    users without a topic-labelled item, and without `item_topics`.
    """
    return mean_by_user(history, user_ids, *topic_table(item_topics, vocabulary))[0]


def history_bags(user_ids: pl.Series, history: pl.DataFrame, vocabulary: list[str], item_types: Sequence[str],
                 length: int) -> torch.Tensor:
    """(U, types, length) int32: per user and item type, the vocabulary rows (+1) of their most-played items,
    most events first, zero-padded; items outside the vocabulary are left out.

    The paper's user tower reads "interaction features ... given as lists of embeddings"; these lists
    index embeddings the two-tower learns, so co-listening taste that item text cannot show (which
    scene of a topic a user follows) still reaches the user tower.
    """
    bags = torch.zeros(user_ids.len(), len(item_types), length, dtype=torch.int32)
    if not vocabulary or history.height == 0:
        return bags
    rows = (history.select("user_id", "item_id", "item_type", "count_events")
            .join(positions(user_ids, "user_id").rename({"row": "u"}), on="user_id")
            .join(positions(pl.Series(vocabulary), "item_id").rename({"row": "v"}), on="item_id")
            .join(pl.DataFrame({"item_type": list(item_types), "t": range(len(item_types))}), on="item_type")
            .sort(["u", "t", "count_events", "v"], descending=[False, False, True, False])
            .with_columns(slot=pl.int_range(pl.len()).over("u", "t"))
            .filter(pl.col("slot") < length))
    bags[rows["u"].to_torch().long(), rows["t"].to_torch().long(), rows["slot"].to_torch().long()] = (
        rows["v"].to_torch().int() + 1)
    return bags


def _history_vocabulary(history: pl.DataFrame | None, limit: int) -> list[str]:
    """The `limit` items most users touched in `history` (at least two users each: one user teaches nothing)."""
    if history is None or limit <= 0:
        return []
    reach = (history.group_by("item_id").agg(pl.col("user_id").n_unique().alias("users"))
             .filter(pl.col("users") >= 2).sort(["users", "item_id"], descending=[True, False]).head(limit))
    return sorted(reach["item_id"].to_list())


def item_inputs(item_ids: pl.Series, items: pl.DataFrame, vocab: Vocabularies, text: Table,
                hgnn: Table | None, hgnn_dim: int, popularity: pl.DataFrame | None,
                with_ids: bool = False, item_topics: pl.DataFrame | None = None) -> TowerInputs:
    """Item tower inputs: categorical = (language,); dense = [genre multi-hot | topic multi-hot | text |
    HGNN | has HGNN | popularity (2)]; with `with_ids`, bags = (I, 1, 1) the item's own row of
    Vocabularies.history_item (+1, 0 = not in it).

    The topic part (len(vocab.topic) columns, zeros for an item without topics) is present only when the
    vocabulary has topics, the HGNN part (hgnn_dim + 1 columns) only when hgnn_dim > 0, the popularity
    part only when `popularity` (from `item_popularity`) is given.
    """
    ids = item_ids.cast(pl.String)
    meta = ids.to_frame("item_id").join(items.select("item_id", "language", "genres").unique("item_id"),
                                        on="item_id", how="left", maintain_order="left")
    categorical = _lookup(meta["language"], vocab.language).unsqueeze(1)  # (I, 1)
    tagged = (meta.with_row_index("i").select("i", pl.col("genres")).explode("genres")
              .join(positions(pl.Series(vocab.genre), "genres"), on="genres"))
    genres = torch.zeros(ids.len(), len(vocab.genre))  # (I, G)
    genres[tagged["i"].cast(pl.Int64).to_torch(), tagged["row"].to_torch()] = 1.0
    parts = [genres]
    if vocab.topic:
        parts.append(aligned_rows(ids, topic_table(item_topics, vocab.topic), len(vocab.topic))[0])  # (I, T)
    parts.append(aligned_rows(ids, text, text[1].shape[1])[0])
    if hgnn_dim:
        rows, present = aligned_rows(ids, hgnn, hgnn_dim)
        parts += [rows, present.unsqueeze(1).float()]
    if popularity is not None:
        shares = (ids.to_frame("item_id").join(popularity, on="item_id", how="left", maintain_order="left")
                  .select(pl.col("percentile", "log_share").fill_null(0.0).cast(pl.Float32)))
        parts.append(shares.to_torch().reshape(ids.len(), 2))
    rows = _lookup(ids, vocab.history_item).int().reshape(-1, 1, 1) if with_ids and vocab.history_item else None
    return TowerInputs(ids, categorical, torch.cat(parts, dim=1), rows)


def item_popularity(item_ids: pl.Series, history: pl.DataFrame) -> pl.DataFrame:
    """(item_id, percentile, log_share): distinct users per item in `history`, as a percentile among
    `item_ids` and as log1p over log1p of the maximum, so windows of any length give one scale."""
    users = history.group_by("item_id").agg(pl.col("user_id").n_unique().alias("users"))
    counts = (item_ids.cast(pl.String).unique().to_frame("item_id")
              .join(users, on="item_id", how="left").with_columns(pl.col("users").fill_null(0).cast(pl.Float64)))
    top = math.log1p(float(counts["users"].max() or 0.0)) or 1.0
    return counts.select("item_id", percentile=pl.col("users").rank("average") / max(1, counts.height),
                         log_share=pl.col("users").log1p() / top)


def _activity(user_ids: pl.Series, history: pl.DataFrame, item_types: Sequence[str]) -> torch.Tensor:
    """(U, 6 * types) log1p counts: four weak signals, plays and distinct items, per item type."""
    aggs = []
    for item_type in item_types:
        of_type = pl.col("item_type") == item_type
        aggs += [(pl.col(flag) & of_type).sum().alias(f"{item_type}:{flag}") for flag in WEAK_FLAGS]
        aggs += [pl.col("count_plays").filter(of_type).sum().alias(f"{item_type}:plays"),
                 of_type.sum().alias(f"{item_type}:items")]
    counts = history.group_by("user_id").agg(aggs)
    columns = [agg.meta.output_name() for agg in aggs]
    frame = (user_ids.to_frame("user_id").join(counts, on="user_id", how="left", maintain_order="left")
             .select(pl.col(columns).cast(pl.Float32).fill_null(0)))
    return frame.to_torch().reshape(user_ids.len(), len(columns)).log1p()


def aligned_rows(ids: pl.Series, table: Table | None, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of `table` in `ids` order, zeros where an id has none: (n, dim) values and (n,) present flags."""
    values, present = torch.zeros(ids.len(), dim), torch.zeros(ids.len(), dtype=torch.bool)
    if table is None:
        return values, present
    table_ids, matrix = table
    if matrix.shape[1] != dim:
        raise ValueError(f"embedding dimension changed since training (got {matrix.shape[1]}, model has {dim}); "
                         "retrain the two-tower model or pass the embeddings it was trained on")
    found = positions(ids, "id").join(positions(table_ids, "id").rename({"row": "src"}), on="id")
    dst = found["row"].to_torch()
    values[dst] = matrix[found["src"].to_torch()]
    present[dst] = True
    return values, present


def _lookup(values: pl.Series, vocabulary: list[str]) -> torch.Tensor:
    """(n,) int64 vocabulary indices, 0 for values unseen at training time or null."""
    index = values.cast(pl.String).replace_strict(vocabulary, list(range(1, len(vocabulary) + 1)),
                                                  default=0, return_dtype=pl.Int64).fill_null(0)
    return index.to_torch()


def _values(column: pl.Series) -> list[str]:
    return sorted(column.drop_nulls().cast(pl.String).unique().to_list())
