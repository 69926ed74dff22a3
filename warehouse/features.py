"""Feature tables: one SQL file each, built in dependency order for one as-of date."""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import duckdb

from warehouse.store import one_row, run_sql, scalar

FEATURE_TABLES = ("splits", "interactions", "user_stats", "item_stats", "co_listen_edges")


@dataclass(frozen=True)
class FeatureParams:
    as_of: dt.date
    window_days: int = 90
    holdout_days: int = 14
    target_type: str = "audiobook"
    graph_types: tuple[str, ...] = ("podcast", "audiobook")
    min_co_listeners: int = 1
    max_items_per_user: int = 50

    def bind(self) -> dict:
        return {
            "as_of": self.as_of, "window_days": self.window_days, "holdout_days": self.holdout_days,
            "target_type": self.target_type, "graph_types": list(self.graph_types),
            "min_co_listeners": self.min_co_listeners, "max_items_per_user": self.max_items_per_user,
        }


@dataclass(frozen=True)
class TableBuild:
    table: str
    rows: int
    seconds: float


def build_table(con: duckdb.DuckDBPyConnection, name: str, params: FeatureParams) -> TableBuild:
    """Build features.<name> from its SQL file; returns its row count and build time."""
    if name not in FEATURE_TABLES:
        raise ValueError(f"unknown feature table {name!r}; expected one of {list(FEATURE_TABLES)}")
    started = time.perf_counter()
    run_sql(con, f"features/{name}", params.bind())
    rows = scalar(con, f"select count(*) from features.{name}")
    return TableBuild(f"features.{name}", rows, time.perf_counter() - started)


def latest_as_of(con: duckdb.DuckDBPyConnection) -> dt.date | None:
    """The day after the newest stored event: the as-of date that uses every event landed so far."""
    newest = scalar(con, "select max(event_date) from raw.events")
    return None if newest is None else newest + dt.timedelta(days=1)
