"""Feature tables: one SQL file each, built in dependency order for one as-of date."""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import duckdb

from warehouse.settings import Settings
from warehouse.store import run_sql, scalar, sql_text



def _setting(name: str) -> Any:
    return Settings.model_fields[name].default


PERIODS = ("train", "valid", "holdout")  # features.splits, in time order (README, "Evaluation protocol")
FEATURE_TABLES = ("splits", "interactions", "user_stats", "item_stats", "co_listen_edges")


@dataclass(frozen=True)
class FeatureParams:
    """What the feature SQL files bind: the as-of date and the settings they read (defaults: the settings')."""

    as_of: dt.date
    window_days: int = _setting("window_days")
    holdout_days: int = _setting("holdout_days")
    valid_days: int = _setting("valid_days")
    target_type: str = _setting("target_type")
    graph_types: tuple[str, ...] = _setting("graph_types")
    min_co_listeners: int = _setting("min_co_listeners")
    max_items_per_user: int = _setting("max_items_per_user")

    @classmethod
    def from_settings(cls, settings: Settings, as_of: dt.date) -> FeatureParams:
        return cls(as_of, **{name: getattr(settings, name) for name in cls.__dataclass_fields__ if name != "as_of"})

    def bind(self) -> dict:
        return {
            "as_of": self.as_of, "window_days": self.window_days, "holdout_days": self.holdout_days,
            "valid_days": self.valid_days,
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


def left_out(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Events and entities of the split window that the feature tables leave out: items no longer in the
    catalogue (not in features.interactions), users missing from raw.users (not in features.user_stats)."""
    cursor = con.execute(sql_text("features/left_out"))
    names = [column[0] for column in cursor.description]
    return dict(zip(names, cursor.fetchone()))


def days_with_events(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Per period of features.splits, the days on which raw.events holds at least one event."""
    found = dict(con.execute("""
        with days as (select distinct event_date as day from raw.events)
        select s.split, count(d.day) from features.splits as s
        left join days as d on d.day >= s.start_at and d.day < s.end_at
        group by 1
    """).fetchall())
    return {f"days_with_events_{period}": found.get(period, 0) for period in PERIODS}


def thin_train_warning(days: dict[str, int]) -> str | None:
    """A warning when the train period has events on fewer days than validation: the models every choice reads
    are then fitted on far less history than the ones refitted for the holdout and for serving."""
    train, valid = days["days_with_events_train"], days["days_with_events_valid"]
    if train >= valid:
        return None
    return (f"the train period has events on {train} days against {valid} in validation: choices on validation "
            f"read models fitted on little history. Land more history before the validation period or lower "
            f"valid_days / holdout_days in crossfade.yaml")
