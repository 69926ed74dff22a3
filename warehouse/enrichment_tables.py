"""enrich.item_topics, enrich.user_profiles, enrich.llm_quality, enrich.text_embeddings: inputs read, answers,
their measured quality and vectors written."""
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
# What the next run reads of the last one: the columns it carries over (with their types), the query, and the
# query for a table written before those columns existed.
PREVIOUS_COLUMNS: dict[str, dict[str, Any]] = {
    "enrich.item_topics": {"last_attempted_at": pl.Datetime("us"), "floor_hash": pl.String,
                           "floor_topics": pl.List(pl.String), "floor_source": pl.String},
    "enrich.user_profiles": {"last_attempted_at": pl.Datetime("us")},
}
PREVIOUS_QUERIES = {
    "enrich.item_topics": (
        "select item_id as entity_id, last_attempted_at, floor_hash, floor_topics, floor_source from enrich.item_topics",
        "select item_id as entity_id from enrich.item_topics",
    ),
    "enrich.user_profiles": (
        "select user_id as entity_id, last_attempted_at from enrich.user_profiles",
        "select user_id as entity_id from enrich.user_profiles",
    ),
}
REQUESTED_ITEM_COLUMNS = ("item_id", "item_type", "input_hash", "floor_topics", "floor_source", "floor_hash",
                          "last_attempted_at")
REQUESTED_USER_COLUMNS = ("user_id", "input_hash", "signature", "template_json", "is_narrative_usable",
                          "last_attempted_at")


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
    stored = {row[0] for row in con.execute(
        "select column_name from information_schema.columns where table_schema = 'enrich' and table_name = 'llm_cache'"
    ).fetchall()}
    rows = con.execute(
        llm_cache.get_query(stored), {"model": model, "prompt_version": prompt_version, "input_hash": input_hash}
    ).fetchall()
    return {(row[0], row[1], row[2]): dict(zip(llm_cache.READ_COLUMNS, row)) for row in rows}


def least_recently_attempted_first(queue: pl.DataFrame, previous: pl.DataFrame, key: str) -> pl.DataFrame:
    """The queue with `last_attempted_at` of the last run joined on, never-attempted entities first, then the
    longest since their last attempt; ties keep the queue's order.

    So what one run's budget left undone is what the next run's budget takes first, and a population of N is
    covered in about N / budget runs instead of the same head of the queue being asked again and again.
    """
    attempts = previous.select(pl.col("entity_id").alias(key), "last_attempted_at")
    return (
        queue.with_row_index("queue_order")
        .join(attempts, on=key, how="left")
        .sort(pl.col("last_attempted_at"), "queue_order", nulls_last=False)
        .drop("queue_order")
    )


def previous_rows(con: duckdb.DuckDBPyConnection, table: str) -> pl.DataFrame:
    """The last run's enrich.item_topics or enrich.user_profiles as (entity_id, last_attempted_at, and for items
    floor_hash, floor_topics, floor_source); empty before the first run, nulls for tables from before a column."""
    if table not in PREVIOUS_COLUMNS:
        raise ValueError(f"no previous rows for {table!r}; known: {sorted(PREVIOUS_COLUMNS)}")
    columns = PREVIOUS_COLUMNS[table]
    if not table_exists(con, table):
        return pl.DataFrame(schema={"entity_id": pl.String, **columns})
    schema, name = table.split(".")
    present = {row[0] for row in con.execute(
        "select column_name from information_schema.columns where table_schema = $schema and table_name = $name",
        {"schema": schema, "name": name}).fetchall()}
    current, before = PREVIOUS_QUERIES[table]
    frame = con.execute(current if present >= set(columns) else before).pl()
    return frame.with_columns(
        pl.lit(None, dtype).alias(column) for column, dtype in columns.items() if column not in frame.columns
    ).cast({"entity_id": pl.String, **columns})


def stamp_attempts(queue: pl.DataFrame, key: str, attempted: set[str], now: dt.datetime) -> pl.DataFrame:
    """The queue with `last_attempted_at` set to `now` (UTC, naive) for the entities sent to the model this run."""
    return queue.with_columns(
        last_attempted_at=pl.when(pl.col(key).is_in(list(attempted))).then(pl.lit(now)).otherwise(
            pl.col("last_attempted_at")
        ).cast(pl.Datetime("us"))
    )


def item_queue(con: duckdb.DuckDBPyConnection, item_types: Sequence[str]) -> pl.DataFrame:
    """Items of these types with last run's attempt time and floor, never or least recently attempted first,
    then most listened."""
    items = con.execute(sql_text("enrich/item_inputs"), {"item_types": list(item_types)}).pl()
    previous = previous_rows(con, "enrich.item_topics").rename({
        "floor_hash": "previous_floor_hash", "floor_topics": "previous_floor_topics",
        "floor_source": "previous_floor_source",
    })
    ordered = least_recently_attempted_first(items, previous.select("entity_id", "last_attempted_at"), "item_id")
    return ordered.join(previous.drop("last_attempted_at").rename({"entity_id": "item_id"}), on="item_id",
                        how="left", maintain_order="left")


def answer_statuses(con: duckdb.DuckDBPyConnection, model: str, prompt_version: str) -> pl.Series:
    """The status ('ok' or 'failed') of every stored answer of this model and prompt version."""
    LLMCache(con)  # the cache table exists even when nothing was ever answered
    return con.execute(sql_text("enrich/answer_statuses"), {"model": model, "prompt_version": prompt_version}).pl()[
        "status"]


def item_answers(con: duckdb.DuckDBPyConnection, requested: pl.DataFrame, model: str, prompt_version: str
                 ) -> pl.DataFrame:
    """Per requested item (REQUESTED_ITEM_COLUMNS): status, llm_topics, floor_topics, floor_source; what topic
    accuracy is measured on."""
    LLMCache(con)
    con.register("requested", requested.select(REQUESTED_ITEM_COLUMNS).to_arrow())
    try:
        return con.execute(sql_text("enrich/item_answers"), {"model": model, "prompt_version": prompt_version}).pl()
    finally:
        con.unregister("requested")


def profile_answers(con: duckdb.DuckDBPyConnection, facts: pa.Table, requested: pl.DataFrame, model: str,
                    prompt_version: str) -> pl.DataFrame:
    """Per requested user (REQUESTED_USER_COLUMNS): status, narrative_json, facts_json; what profile faithfulness
    is measured on."""
    LLMCache(con)
    con.register("user_facts", facts)
    con.register("requested", requested.select(REQUESTED_USER_COLUMNS).to_arrow())
    try:
        return con.execute(sql_text("enrich/profile_answers"), {"model": model, "prompt_version": prompt_version}).pl()
    finally:
        con.unregister("user_facts")
        con.unregister("requested")


def write_llm_quality(con: duckdb.DuckDBPyConnection, measured: pl.DataFrame) -> None:
    """Replace the enrich.llm_quality rows of the kinds in `measured` (models.llm_quality.SCHEMA); other kinds stay."""
    if measured.is_empty():
        raise ValueError("no quality rows to write: measure every metric of the kind, even with no answers")
    con.register("measured", measured.to_arrow())
    try:
        run_sql(con, "enrich/llm_quality")
    finally:
        con.unregister("measured")


def write_item_topics(
    con: duckdb.DuckDBPyConnection, requested: pl.DataFrame, measured: pl.DataFrame, model: str, prompt_version: str
) -> int:
    """Write the item_topics kind's quality rows (`measured`), then rebuild enrich.item_topics from `requested`
    (REQUESTED_ITEM_COLUMNS) and the cache: the LLM's topics are used only where that kind passed."""
    LLMCache(con)
    write_llm_quality(con, measured)
    con.register("requested", requested.select(REQUESTED_ITEM_COLUMNS).to_arrow())
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
    """(user_id, facts_json, last_attempted_at) of users with listening, in budget order: never or least recently
    attempted first, then most active."""
    listeners = pl.from_arrow(facts.select(["user_id", "facts_json", "top_items"])).filter(
        pl.col("top_items").list.len() > 0
    )
    return least_recently_attempted_first(
        listeners.select("user_id", "facts_json"), previous_rows(con, "enrich.user_profiles"), "user_id"
    )


def write_user_profiles(
    con: duckdb.DuckDBPyConnection, facts: pa.Table, requested: pl.DataFrame, measured: pl.DataFrame, model: str,
    prompt_version: str,
) -> int:
    """Write the user_profiles kind's quality rows (`measured`), then rebuild enrich.user_profiles from the facts of
    every user, `requested` (REQUESTED_USER_COLUMNS) and the cache: narratives are used only where that kind passed."""
    LLMCache(con)
    write_llm_quality(con, measured)
    con.register("user_facts", facts)
    con.register("requested", requested.select(REQUESTED_USER_COLUMNS).to_arrow())
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
