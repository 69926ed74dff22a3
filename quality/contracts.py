"""Table contracts: the columns and types readers may rely on (README "Tables"), checked against what a stage wrote.

The raw tables' contract is their declaration in warehouse/sql/schema.sql, read into an empty in-memory
database; the feature tables, which their SQL files replace whole, are declared here.
"""
from __future__ import annotations

from functools import lru_cache

import duckdb
import great_expectations.expectations as gxe
import polars as pl

from quality.validate import Report, validate_frame
from warehouse.store import sql_text

FEATURES = {
    "features.splits": {"split": "VARCHAR", "start_at": "TIMESTAMP", "end_at": "TIMESTAMP"},
    "features.interactions": {
        "period": "VARCHAR", "user_id": "VARCHAR", "item_id": "VARCHAR", "item_type": "VARCHAR",
        "count_events": "BIGINT", "count_plays": "BIGINT", "ms_played_total": "BIGINT", "completion_rate": "DOUBLE",
        "is_played": "BOOLEAN", "is_skipped": "BOOLEAN", "is_saved": "BOOLEAN", "is_followed": "BOOLEAN",
        "is_previewed": "BOOLEAN", "is_purchased": "BOOLEAN", "first_seen_at": "TIMESTAMP", "last_seen_at": "TIMESTAMP",
    },
    "features.user_stats": {
        "user_id": "VARCHAR", "country": "VARCHAR", "age_bucket": "VARCHAR", "plan": "VARCHAR",
        "count_events": "BIGINT", "count_music_plays": "BIGINT", "count_podcast_plays": "BIGINT",
        "count_audiobook_plays": "BIGINT", "count_items": "BIGINT", "is_active": "BOOLEAN", "is_warm": "BOOLEAN",
        "has_holdout_target": "BOOLEAN",
    },
    "features.item_stats": {
        "item_id": "VARCHAR", "item_type": "VARCHAR", "language": "VARCHAR", "count_listeners": "BIGINT",
        "count_plays": "BIGINT", "median_completion": "DOUBLE", "is_released": "BOOLEAN", "popularity_tier": "INTEGER",
    },
    "features.co_listen_edges": {
        "src_item_id": "VARCHAR", "dst_item_id": "VARCHAR", "src_type": "VARCHAR", "dst_type": "VARCHAR",
        "relation": "VARCHAR", "co_listeners": "BIGINT",
    },
}



@lru_cache(maxsize=1)
def _declared() -> dict[str, dict[str, str]]:
    """Every table schema.sql declares, with its columns in order: the raw stage's contract."""
    con = duckdb.connect()
    try:
        con.execute(sql_text("schema"))
        rows = con.execute(
            "select schema_name || '.' || table_name, column_name, data_type from duckdb_columns() "
            "where database_name = current_database() order by schema_name, table_name, column_index"
        ).fetchall()
    finally:
        con.close()
    tables: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        tables.setdefault(table, {})[column] = data_type
    return tables


def contract(table: str) -> dict[str, str]:
    """Column name -> DuckDB type of `table` as readers may rely on it."""
    known = {**_declared(), **FEATURES}
    if table not in known:
        raise KeyError(f"no contract for {table!r}; known: {sorted(known)}")
    return known[table]


def columns_report(con: duckdb.DuckDBPyConnection, table: str, suite_version: str) -> Report:
    """The stored table's columns and types against its contract: none missing, none extra, none retyped."""
    try:  # whatever `table` names for this connection: a table, or a reader's view of its published snapshot
        stored = con.execute(f"select column_name || ' ' || column_type as column_type from (describe {table})").pl()
    except duckdb.CatalogException:
        stored = pl.DataFrame({"column_type": []}, schema={"column_type": pl.String})
    expected = [f"{column} {data_type}" for column, data_type in contract(table).items()]
    return validate_frame(table, stored, [
        gxe.ExpectColumnValuesToBeInSet(column="column_type", value_set=expected),  # extra or retyped columns
        gxe.ExpectColumnDistinctValuesToContainSet(column="column_type", value_set=expected),  # missing ones
    ], suite_version, batch="columns")
