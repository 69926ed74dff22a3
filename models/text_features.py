"""Hashed bag-of-words item vectors: the text features used when no sentence-transformer embeddings exist yet."""
from __future__ import annotations

import polars as pl
import torch

TEXT_COLUMNS = ("title", "description", "creator", "genres")
HASHED_NAME = "hashed-bow"  # names these vectors where a text encoder's name would stand


def hashed_text_embeddings(items: pl.DataFrame, dim: int = 384) -> pl.DataFrame:
    """(item_id, embedding list[float32]) unit vectors, one per row of `items` (raw.items columns).

    Each lower-cased word of title, description, creator and genres adds +1 or -1 (from its hash) to one
    of `dim` buckets, then the row is L2-normalised: items sharing words point the same way. An item
    with no words gets the zero vector. Deterministic across processes (polars' seeded hash).
    """
    if dim < 2:
        raise ValueError(f"dim must be at least 2 (got {dim})")
    missing = [c for c in ("item_id", *TEXT_COLUMNS) if c not in items.columns]
    if missing:
        raise ValueError(f"items: missing columns {missing} (got {items.columns}); pass raw.items rows")
    text = items.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
        pl.concat_str([pl.col("title").fill_null(""), pl.col("description").fill_null(""),
                       pl.col("creator").fill_null(""), pl.col("genres").list.join(" ").fill_null("")],
                      separator=" ").str.to_lowercase().alias("text"),
    )
    words = (text.select("row", pl.col("text").str.extract_all(r"[\p{L}\p{N}]+").alias("word"))
             .explode("word").drop_nulls("word")
             .with_columns(pl.col("word").hash(seed=7).alias("h")))
    bucket = (words["h"] % dim).cast(pl.Int64).to_torch()
    sign = ((words["h"] // dim) % 2).cast(pl.Float32).to_torch() * 2 - 1  # another bit of the hash
    matrix = torch.zeros(items.height, dim).index_put_((words["row"].to_torch(), bucket), sign, accumulate=True)
    matrix = torch.nn.functional.normalize(matrix, dim=1)  # (I, dim); zero rows stay zero
    return pl.DataFrame({"item_id": items["item_id"].cast(pl.String),
                         "embedding": pl.Series(matrix.numpy()).cast(pl.List(pl.Float32))})


def node_features(item_ids: pl.Series, embeddings: pl.DataFrame) -> tuple[torch.Tensor, int]:
    """(N, d) float32 rows of `embeddings` (item_id, embedding) in `item_ids` order, and how many items had none.

    An item without a vector gets zeros: the HGNN then embeds it from its neighbours alone.
    """
    if embeddings.height == 0:
        raise ValueError("no text embeddings given; pass enrich.text_embeddings rows or hashed_text_embeddings(items)")
    dim = int(embeddings["embedding"].list.len().max())
    aligned = item_ids.cast(pl.String).to_frame("item_id").join(
        embeddings.select(pl.col("item_id").cast(pl.String), "embedding"), on="item_id", how="left",
        maintain_order="left")
    missing = int(aligned["embedding"].null_count())
    filled = aligned["embedding"].cast(pl.List(pl.Float32)).fill_null(pl.lit([0.0] * dim, dtype=pl.List(pl.Float32)))
    return filled.explode().to_torch().reshape(item_ids.len(), dim), missing


def text_or_hashed(stored: tuple[pl.DataFrame, str] | None, items: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """Stored sentence-transformer vectors (frame, encoder name) when there are any, else hashed ones; and the source."""
    if stored is not None:
        frame, encoder = stored
        return frame, f"enrich.text_embeddings ({encoder})"
    return hashed_text_embeddings(items), f"{HASHED_NAME} fallback (enrich.text_embeddings missing or empty)"
