"""Dagster resources: settings from CROSSFADE_HOME and the one DuckDB warehouse every stage writes through."""
from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from pipelines.settings import Settings, load_settings
from quality import Thresholds
from warehouse.features import FeatureParams, latest_as_of
from warehouse.store import Store

AS_OF_TAG = "crossfade/as_of"


class Crossfade(dg.ConfigurableResource):
    """Where crossfade lives and how it is configured (crossfade.yaml and CROSSFADE_* variables)."""

    home: str = ""  # empty: CROSSFADE_HOME, else ./.crossfade

    def settings(self) -> Settings:
        return load_settings(home=self.home or None)

    def thresholds(self, partitions: tuple[dt.date, ...] = ()) -> Thresholds:
        s = self.settings()
        return Thresholds(
            item_types=s.item_types, graph_types=s.graph_types, target_type=s.target_type,
            max_reject_rate=s.max_reject_rate, volume_tolerance=s.volume_tolerance,
            min_co_listeners=s.min_co_listeners, min_catalog_coverage=s.min_catalog_coverage,
            k=s.k, partitions=partitions, llm_max_failure_rate=s.llm_max_failure_rate,
            embed_user_budget=s.embed_user_budget,
        )

    def as_of(self, context: dg.OpExecutionContext | dg.AssetCheckExecutionContext, con: duckdb.DuckDBPyConnection) -> dt.date:
        """The run's as-of date: its tag, else crossfade.yaml, else the day after the newest event."""
        tags = context.run.tags if context.run else {}
        if tags.get(AS_OF_TAG):
            return dt.date.fromisoformat(tags[AS_OF_TAG])
        # A nightly run for partition K serves the morning after K: it uses every event before K + 1.
        day = tags.get("dagster/partition") or tags.get("dagster/asset_partition_range_end")
        if day:
            return dt.date.fromisoformat(day) + dt.timedelta(days=1)
        configured = self.settings().as_of
        if configured:
            return configured
        latest = latest_as_of(con)
        if latest is None:
            raise dg.Failure("raw.events is empty: ingest events first (materialise raw/events)")
        return latest

    def feature_params(self, as_of: dt.date) -> FeatureParams:
        s = self.settings()
        return FeatureParams(
            as_of=as_of, window_days=s.window_days, holdout_days=s.holdout_days, target_type=s.target_type,
            graph_types=s.graph_types, min_co_listeners=s.min_co_listeners, max_items_per_user=s.max_items_per_user,
        )


class Warehouse(DuckDBResource):
    """The DuckDB file: writes are serialised and published as snapshots that readers query."""

    database: str = ""  # empty: CROSSFADE_HOME/warehouse/crossfade.duckdb
    lock_timeout_s: float = 600.0

    def store(self) -> Store:
        path = Path(self.database) if self.database else load_settings().database
        return Store(path, lock_timeout_s=self.lock_timeout_s)

    @contextlib.contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.store().write() as con:
            yield con

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.store().read() as con:
            yield con

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """dagster-duckdb's entry point, kept read-only: every write goes through `write()`."""
        with self.read() as con:
            yield con
