"""enrich.item_topics, enrich.user_profiles, enrich.text_embeddings: inputs read, answers and vectors written."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from warehouse import llm_cache
from warehouse.llm_cache import LLMCache
from warehouse.store import run_sql, scalar, sql_text, table_exists

CacheKey = tuple[str, str, str]  # (model, prompt_version, input_hash)
MAX_TOPICS = 5  # topics per user in the facts
STATUS_QUERIES = {
    "enrich.item_topics": "select item_id as entity_id, status from enrich.item_topics",
    "enrich.user_profiles": "select user_id as entity_id, status from enrich.user_profiles",
}


class BufferedCache:
    """The cache as a run sees it: answers known when it started, and the answers it paid for since.

    Enrichment reads the cache from a published snapshot and writes new answers once the calls are done,
    so the warehouse's single writer lock is not held while the model thinks.
    """

    def __init__(self, known: Mapping[CacheKey, dict[str, Any]]) -> None:
        self.known = dict(known)
        self.new_rows: list[dict[str, Any]] = []

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, dict[str, Any]]:
        return {key: self.known[key] for key in keys if key in self.known}

    def put_many(self, rows: Sequence[dict[str, Any]]) -> None:
        self.new_rows.extend(rows)
        self.known.update({(row["model"], row["prompt_version"], row["input_hash"]): row for row in rows})


def cached_answers(con: duckdb.DuckDBPyConnection, keys: Sequence[CacheKey]) -> dict[CacheKey, dict[str, Any]]:
    """Stored answers for these keys; works on a read-only snapshot, where the cache may not exist yet."""
    if not keys or not table_exists(con, llm_cache.TABLE):
        return {}
    model, prompt_version, input_hash = (list(part) for part in zip(*keys))
    rows = con.execute(
        llm_cache.GET, {"model": model, "prompt_version": prompt_version, "input_hash": input_hash}
    ).fetchall()
    return {(row[0], row[1], row[2]): dict(zip(llm_cache.COLUMNS, row)) for row in rows}


def pending_first(queue: pl.DataFrame, previous: pl.DataFrame, key: str) -> pl.DataFrame:
    """The queue with entities left 'pending' by the last run moved to the front, each part in its own order.

    So what one run's budget left undone is what the next run's budget takes first, ahead of new entities.
    """
    was_pending = (
        previous.filter(pl.col("status") == "pending")
        .select(pl.col("entity_id").alias(key))
        .with_columns(was_pending=pl.lit(True))
    )
    return (
        queue.with_row_index("queue_order")
        .join(was_pending, on=key, how="left")
        .sort(pl.col("was_pending").is_null(), "queue_order")
        .drop("queue_order", "was_pending")
    )


def previous_statuses(con: duckdb.DuckDBPyConnection, table: str) -> pl.DataFrame:
    """(entity_id, status) of the last run's enrich.item_topics or enrich.user_profiles; empty before the first."""
    if table not in STATUS_QUERIES:
        raise ValueError(f"no status query for {table!r}; known: {sorted(STATUS_QUERIES)}")
    if not table_exists(con, table):
        return pl.DataFrame(schema={"entity_id": pl.String, "status": pl.String})
    return con.execute(STATUS_QUERIES[table]).pl()


def item_queue(con: duckdb.DuckDBPyConnection, item_types: Sequence[str]) -> pl.DataFrame:
    """Items of these types for the LLM, in budget order: last run's pending first, then most listened."""
    items = con.execute(sql_text("enrich/item_inputs"), {"item_types": list(item_types)}).pl()
    return pending_first(items, previous_statuses(con, "enrich.item_topics"), "item_id")


def write_item_topics(
    con: duckdb.DuckDBPyConnection, requested: pl.DataFrame, model: str, prompt_version: str
) -> int:
    """Rebuild enrich.item_topics from requested(item_id, item_type, input_hash) and the cache."""
    LLMCache(con)  # the cache table exists even when nothing was ever answered
    con.register("requested", requested.select("item_id", "item_type", "input_hash").to_arrow())
    try:
        run_sql(con, "enrich/item_topics", {"model": model, "prompt_version": prompt_version})
    finally:
        con.unregister("requested")
    return scalar(con, "select count(*) from enrich.item_topics")


def user_facts(con: duckdb.DuckDBPyConnection, max_items: int) -> pa.Table:
    """enrich/user_facts.sql: one row per user, most active first, with facts_json in UserFacts' shape."""
    if not table_exists(con, "enrich.item_topics"):
        raise LookupError("enrich.item_topics is missing: materialise enrich/item_topics before enrich/user_profiles")
    return con.execute(
        sql_text("enrich/user_facts"), {"max_items": max_items, "max_topics": MAX_TOPICS}
    ).to_arrow_table()


def user_queue(con: duckdb.DuckDBPyConnection, facts: pa.Table) -> pl.DataFrame:
    """(user_id, facts_json) of users with listening, in budget order: last run's pending, then most active."""
    listeners = pl.from_arrow(facts.select(["user_id", "facts_json", "top_items"])).filter(
        pl.col("top_items").list.len() > 0
    )
    return pending_first(
        listeners.select("user_id", "facts_json"), previous_statuses(con, "enrich.user_profiles"), "user_id"
    )


def write_user_profiles(
    con: duckdb.DuckDBPyConnection, facts: pa.Table, requested: pl.DataFrame, model: str, prompt_version: str
) -> int:
    """Rebuild enrich.user_profiles from the facts of every user, requested(user_id, input_hash) and the cache."""
    LLMCache(con)
    con.register("user_facts", facts)
    con.register("requested", requested.select("user_id", "input_hash").to_arrow())
    try:
        run_sql(con, "enrich/user_profiles", {"model": model, "prompt_version": prompt_version})
    finally:
        con.unregister("user_facts")
        con.unregister("requested")
    return scalar(con, "select count(*) from enrich.user_profiles")


def embedding_inputs(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """(entity, entity_id, text) for every item and every user with listening."""
    for table in ("enrich.item_topics", "enrich.user_profiles"):
        if not table_exists(con, table):
            raise LookupError(f"{table} is missing: materialise it before enrich/text_embeddings")
    return con.execute(sql_text("enrich/embedding_inputs")).pl()


def stored_hashes(con: duckdb.DuckDBPyConnection, entity: str) -> dict[str, str]:
    """entity_id -> input_hash of the vectors stored for one entity kind; empty before the first run."""
    if not table_exists(con, "enrich.text_embeddings"):
        return {}
    rows = con.execute(
        "select entity_id, input_hash from enrich.text_embeddings where entity = $entity", {"entity": entity}
    ).fetchall()
    return dict(rows)


def encoded_times(con: duckdb.DuckDBPyConnection, entity: str) -> dict[str, dt.datetime]:
    """entity_id -> when its stored vector was encoded; vectors stored before encoded_at existed are left out."""
    if not table_exists(con, "enrich.text_embeddings") or not con.execute(
        "select count(*) from information_schema.columns where table_schema = 'enrich' "
        "and table_name = 'text_embeddings' and column_name = 'encoded_at'").fetchone()[0]:
        return {}
    rows = con.execute(
        "select entity_id, encoded_at from enrich.text_embeddings where entity = $entity and encoded_at is not null",
        {"entity": entity},
    ).fetchall()
    return dict(rows)


def encoded_rows(
    entity: str, ids: Sequence[str], input_hashes: Sequence[str], vectors: np.ndarray, model: str
) -> pa.Table:
    """Rows for enrich.text_embeddings from an (N, dim) float32 matrix, without a Python loop over rows."""
    count, dim = vectors.shape
    if count != len(ids) or count != len(input_hashes):
        raise ValueError(f"{count} vectors for {len(ids)} ids and {len(input_hashes)} hashes; they must agree")
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    embedding = pa.FixedSizeListArray.from_arrays(flat, dim).cast(pa.list_(pa.float32()))
    return pa.table({
        "entity": pa.array([entity] * count, pa.string()),
        "entity_id": pa.array(list(ids), pa.string()),
        "model": pa.array([model] * count, pa.string()),
        "dim": pa.array([dim] * count, pa.int32()),
        "input_hash": pa.array(list(input_hashes), pa.string()),
        "embedding": embedding,
    })


def write_text_embeddings(con: duckdb.DuckDBPyConnection, current: pl.DataFrame, encoded: pa.Table) -> int:
    """Keep the vectors of `current` (entity, entity_id): replace the `encoded` ones, drop those gone."""
    con.register("current_inputs", current.select("entity", "entity_id").to_arrow())
    con.register("encoded", encoded)
    try:
        run_sql(con, "enrich/text_embeddings")
    finally:
        con.unregister("current_inputs")
        con.unregister("encoded")
    return scalar(con, "select count(*) from enrich.text_embeddings")
