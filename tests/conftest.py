"""Shared fixtures: a small simulated world ingested once per session, hand-made landing files, a CROSSFADE_HOME."""
from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: torch's and polars' own pools of one thread per core in each
    # worker spin at barriers against the other worker, and made the model-training tests 3-4x slower
    # than alone. Set before those libraries load; `crossfade run` subprocesses inherit it.
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
        os.environ.setdefault(_name, "1")

import contextlib
import datetime as dt
import gzip
import io
import json
import select
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from warehouse import ingest, landing
from warehouse.features import FEATURE_TABLES, FeatureParams, build_table
from warehouse.store import Store
from worlds.sample import WorldConfig, WorldSummary, simulate
from worlds.shapes import csv_cell

ITEM_TYPES = ("music", "podcast", "audiobook")
# The pipeline's types as model configs take them (settings hold the pipeline's defaults).
TYPES = {"target_type": "audiobook", "graph_types": ("podcast", "audiobook"), "item_types": ITEM_TYPES}
EVAL_TYPES = {"target_type": "audiobook", "graph_types": ("podcast", "audiobook")}
# A fixed end date keeps the world independent of today: 300 users x 30 days is about 13k event rows.
WORLD = WorldConfig(users=300, days=30, seed=1, end_date=dt.date(2026, 11, 1))
WORLD_AS_OF = WORLD.end_date + dt.timedelta(days=1)


@dataclass(frozen=True)
class IngestedWorld:
    """A CROSSFADE_HOME whose landing zone is ingested and whose features are built for `params.as_of`.

    Shared by the whole session: tests only read it (through `store.read()`) or copy it with `copy_to`.
    """

    home: Path
    store: Store
    summary: WorldSummary
    items: ingest.IngestResult
    users: ingest.IngestResult
    events: dict[str, ingest.IngestResult]  # by arrival partition
    params: FeatureParams

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    def copy_to(self, home: Path) -> Store:
        """A private copy of landing zone and warehouse under `home`, for tests that write."""
        shutil.copytree(self.home, home, dirs_exist_ok=True)
        return Store(home / "warehouse" / "crossfade.duckdb")


def with_gates(definitions: list) -> list:
    """Assets with their blocking gates, as the UI and `crossfade run` materialise them: a stage's writes reach
    readers (`Store.read()`) only when its gate passes and publishes them."""
    import dagster as dg

    from assets import enrich, eval, features, models, raw, serving

    keys = {key for definition in definitions if isinstance(definition, dg.AssetsDefinition) for key in definition.keys}
    gates = dg.load_asset_checks_from_modules([raw, features, enrich, models, eval, serving])
    return [*definitions, *[gate for gate in gates if gate not in definitions
                            and any(spec.asset_key in keys for spec in gate.check_specs)]]


@pytest.fixture(scope="session")
def ingested_world(tmp_path_factory: pytest.TempPathFactory) -> IngestedWorld:
    """The sample world simulated, ingested and featurised once per session, as `crossfade run` would."""
    home = tmp_path_factory.mktemp("world")
    summary = simulate(WORLD, home / "landing")
    store = Store(home / "warehouse" / "crossfade.duckdb")
    params = FeatureParams(as_of=WORLD_AS_OF)
    with store.write() as con:
        items = ingest.ingest_items(con, home / "landing", ITEM_TYPES)
        users = ingest.ingest_users(con, home / "landing")
        events = {key: ingest.ingest_events(con, home / "landing", key) for key in landing.event_partitions(home / "landing")}
        for name in FEATURE_TABLES:
            build_table(con, name, params)
    return IngestedWorld(home, store, summary, items, users, events, params)


# The files that run the whole chain, longest first: they start first, so with `pytest -n 2` (make test)
# the other files fill the second worker around them instead of leaving one of these to run alone at the end.
LONGEST_FIRST = ("tests/worlds/test_movielens.py", "tests/worlds/test_world_matrix.py",
                 "tests/pipelines/test_write_audit_publish.py", "tests/assets/test_models.py",
                 "tests/worlds/test_torn_file.py", "tests/reliability/test_readers.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = Path(str(item.path)).as_posix()
        return next((n for n, name in enumerate(LONGEST_FIRST) if path.endswith(name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept


@pytest.fixture
def crossfade_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CROSSFADE_HOME (with its DAGSTER_HOME) that settings and Dagster resources point at."""
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    for name in list(os.environ):
        if name.startswith("CROSSFADE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CROSSFADE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


class Landing:
    """Hand-made landing files; the format comes from the file name (.jsonl, .csv, .parquet, + .gz)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def event(event_id: str | None, /, **fields: Any) -> dict[str, Any]:
        """A valid event of user u1 playing podcast p1 on 2026-11-01 unless fields say otherwise."""
        return {"event_id": event_id, "user_id": "u1", "item_id": "p1", "ts": "2026-11-01T08:00:00Z",
                "event_type": "play", "ms_played": 60_000, "context": "home", "country": "SE", **fields}

    @staticmethod
    def item(item_id: str, item_type: str, /, **fields: Any) -> dict[str, Any]:
        return {"item_id": item_id, "item_type": item_type, "title": f"Title {item_id}",
                "description": f"About {item_id}", "creator": "someone", "language": "en", "genres": ["drama"],
                "duration_ms": 600_000, "release_date": "2020-01-01", "is_paid": False, **fields}

    @staticmethod
    def user(user_id: str, /, **fields: Any) -> dict[str, Any]:
        return {"user_id": user_id, "country": "SE", "age_bucket": "25-34", "signup_date": "2024-01-01",
                "plan": "premium", **fields}

    def catalog(self, items: list[dict[str, Any]] | None = None, users: list[dict[str, Any]] | None = None) -> None:
        """items/items.jsonl and users/users.jsonl; by default m1-m3, p1-p3, a1-a3 and users u1-u6."""
        default_items = [self.item(f"{prefix}{n}", kind) for prefix, kind in (("m", "music"), ("p", "podcast"), ("a", "audiobook"))
                         for n in (1, 2, 3)]
        self.write("items/items.jsonl", items if items is not None else default_items)
        self.write("users/users.jsonl", users if users is not None else [self.user(f"u{n}") for n in range(1, 7)])

    def events(self, day: str, rows: list[dict[str, Any]], name: str = "part-0.jsonl", bom: bool = False) -> Path:
        return self.write(f"events/date={day}/{name}", rows, bom=bom)

    def write(self, relative: str, rows: list[dict[str, Any]], bom: bool = False) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        stem = path.name.removesuffix(".gz")
        if stem.endswith(".parquet"):
            buffer = io.BytesIO()
            pl.DataFrame(rows, infer_schema_length=None).write_parquet(buffer)
            path.write_bytes(gzip.compress(buffer.getvalue()) if path.name.endswith(".gz") else buffer.getvalue())
            return path
        if stem.endswith(".csv"):
            columns = list(rows[0])
            lines = [",".join(columns)] + [",".join(csv_cell(row.get(column)) for column in columns) for row in rows]
        else:
            lines = [json.dumps(row, default=str) for row in rows]
        return self.write_lines(relative, lines, bom=bom)

    def write_lines(self, relative: str, lines: list[str], bom: bool = False) -> Path:
        """Raw text lines, for broken records a writer of rows could not produce."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = (("\ufeff" if bom else "") + "\n".join(lines) + "\n").encode()
        path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
        return path


@pytest.fixture
def hand_landing(tmp_path: Path) -> Landing:
    """An empty landing zone at the place `crossfade_home` expects it (tmp_path/home/landing)."""
    return Landing(tmp_path / "home" / "landing")


@pytest.fixture
def hand_store(tmp_path: Path) -> Store:
    """An empty warehouse at the place `crossfade_home` expects it."""
    return Store(tmp_path / "home" / "warehouse" / "crossfade.duckdb", lock_timeout_s=5)


@pytest.fixture
def ingest_hand(hand_landing: Landing, hand_store: Store) -> Callable[..., dict[str, ingest.IngestResult]]:
    """A function that ingests the hand-made landing zone (catalogue, then the given partitions)."""

    def run(*partitions: str) -> dict[str, ingest.IngestResult]:
        with hand_store.write() as con:
            ingest.ingest_items(con, hand_landing.root, ITEM_TYPES)
            ingest.ingest_users(con, hand_landing.root)
            return {key: ingest.ingest_events(con, hand_landing.root, key) for key in partitions}

    return run


WRITER = """
import sys
from pathlib import Path

from warehouse.store import Store

with Store(Path(sys.argv[1])).write() as con:
    con.execute("create or replace table main.written_meanwhile as select 42 as answer")
    print("holding", flush=True)
    sys.stdin.readline()  # hold the write lock until the test says go
"""


@contextlib.contextmanager
def hold_write(database: Path, timeout_s: float = 60.0) -> Iterator[subprocess.Popen]:
    """Another process inside Store(database).write(), having written; it finishes when told via stdin.

    Send a line to its stdin and wait for it to publish; it is killed on the way out whatever happens.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        line = process.stdout.readline() if ready else ""
        if line.strip() != "holding":
            process.kill()
            raise AssertionError(f"writer process did not start writing: {process.communicate()[1][-2000:]}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=timeout_s)


@pytest.fixture
def writer_process() -> Callable[..., contextlib.AbstractContextManager[subprocess.Popen]]:
    """`with writer_process(database) as process:` another process holds the write lock meanwhile."""
    return hold_write
