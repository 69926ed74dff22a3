"""Table readers: the warehouse tables every model function reads, as polars frames (assets and bench alike)."""
from __future__ import annotations

import duckdb
import polars as pl

from warehouse.store import scalar, table_exists

FEATURE_FRAMES = {
    "interactions": "features.interactions",
    "user_stats": "features.user_stats",
    "item_stats": "features.item_stats",
    "items": "raw.items",
    "splits": "features.splits",
}
# Interaction columns no model reads from the frame (profiles and the judge query them in SQL); leaving them
# out saves 32 bytes a row, 1.4 GB at 1M users.
UNREAD_INTERACTION_COLUMNS = ("ms_played_total", "completion_rate", "first_seen_at", "last_seen_at")
BATCH_ROWS = 1_000_000  # rows fetched at a time: DuckDB never holds a whole result beside its polars frame


def feature_tables(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame | None]:
    """The feature tables, raw.items and enrich.item_topics by the field names of models.recommender.FeatureFrames.

    item_topics is (item_id, topics): the column enrich.item_topics offers downstream (the LLM's topics where
    they passed their floor, else the floor's); None in a warehouse enrichment has not reached.
    """
    frames: dict[str, pl.DataFrame | None] = {
        name: frame(con, f"select * from {table}", drop=UNREAD_INTERACTION_COLUMNS if name == "interactions" else ())
        for name, table in FEATURE_FRAMES.items()}
    frames["item_topics"] = (con.sql("select item_id, topics from enrich.item_topics").pl()
                             if table_exists(con, "enrich.item_topics") else None)
    return frames


def frame(con: duckdb.DuckDBPyConnection, query: str, drop: tuple[str, ...] = ()) -> pl.DataFrame:
    """A query's rows as a polars frame, fetched BATCH_ROWS at a time (chunks are kept, not copied into one),
    without the columns in `drop` (each batch's are let go as it arrives; absent ones are ignored)."""
    reader = con.sql(query).fetch_record_batch(BATCH_ROWS)
    batches = [pl.DataFrame(pl.from_arrow(batch)).drop(drop, strict=False) for batch in reader]
    if not batches:
        return pl.DataFrame(pl.from_arrow(reader.schema.empty_table())).drop(drop, strict=False)
    return pl.concat(batches, rechunk=False)


def item_text_embeddings(con: duckdb.DuckDBPyConnection) -> tuple[pl.DataFrame, str] | None:
    """(item_id, embedding) of items from enrich.text_embeddings and the encoder's name; None when there are none."""
    if not _has_entity(con, "item"):
        return None
    frame = con.sql("select entity_id as item_id, embedding, model from enrich.text_embeddings "
                    "where entity = 'item'").pl()
    return frame.select("item_id", "embedding"), frame["model"][0]


def profile_embeddings(con: duckdb.DuckDBPyConnection) -> pl.DataFrame | None:
    """(user_id, embedding) of user profiles from enrich.text_embeddings, or None before enrichment has run."""
    if not _has_entity(con, "user"):
        return None
    return con.sql("select entity_id as user_id, embedding from enrich.text_embeddings where entity = 'user'").pl()


def _has_entity(con: duckdb.DuckDBPyConnection, entity: str) -> bool:
    return table_exists(con, "enrich.text_embeddings") and bool(
        scalar(con, "select count(*) from enrich.text_embeddings where entity = $entity", {"entity": entity}))
