"""Expectation suites per table; `check(con, table, limits)` runs one and returns its Report."""
from __future__ import annotations

from collections.abc import Callable

import duckdb

from quality import feature_suites, raw_suites
from quality.thresholds import Thresholds
from quality.validate import Report

SUITES: dict[str, Callable[[duckdb.DuckDBPyConnection, Thresholds], Report]] = {
    "raw.events": raw_suites.events_suite,
    "raw.items": raw_suites.items_suite,
    "raw.users": raw_suites.users_suite,
    "features.splits": feature_suites.splits_suite,
    "features.interactions": feature_suites.interactions_suite,
    "features.user_stats": feature_suites.user_stats_suite,
    "features.item_stats": feature_suites.item_stats_suite,
    "features.co_listen_edges": feature_suites.co_listen_edges_suite,
}


def check(con: duckdb.DuckDBPyConnection, table: str, limits: Thresholds) -> Report:
    """Run the suite of `table` (schema-qualified) on the current warehouse contents."""
    if table not in SUITES:
        raise KeyError(f"no expectation suite for {table!r}; known: {sorted(SUITES)}")
    return SUITES[table](con, limits)


__all__ = ["Report", "SUITES", "Thresholds", "check"]
