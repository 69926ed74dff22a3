"""Fault injection: killed writers, broken landing files, a held write lock, a full disk, a failing LLM endpoint."""
from __future__ import annotations

import datetime as dt
import errno
import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from models.enrichment import run_batch
from models.item_topics import item_request
from models.llm import OpenAICompatible
from tests.conftest import with_gates
from tests.reliability.conftest import (
    ROOT,
    checksums,
    closed_port_url,
    ingest_totals,
    llm_stub,
    published_state_kept,
    sigkill,
    start_writer,
    wait_for,
)
from warehouse import ingest, landing
from warehouse.enrichment_tables import BufferedCache
from warehouse.features import FEATURE_TABLES, FeatureParams, build_table
from warehouse.llm_cache import LLMCache
from warehouse.store import STATE, Store, WarehouseBusyError

pytestmark = pytest.mark.slow
ITEM_TYPES = ("music", "podcast", "audiobook")
DAY = "2026-11-01"


def _retry(store: Store, landing_dir: Path, as_of: dt.date) -> list[str]:
    """What `crossfade run` does after a failure: ingest what changed, rebuild the features."""
    with store.write() as con:
        ingest.ingest_items(con, landing_dir, ITEM_TYPES)
        ingest.ingest_users(con, landing_dir)
        keys = ingest.changed_partitions(con, landing_dir)
        for key in keys:
            ingest.ingest_events(con, landing_dir, key)
        for name in FEATURE_TABLES:
            build_table(con, name, FeatureParams(as_of=as_of))
    return keys


def _clean(ingested_world) -> tuple[dict, tuple]:
    with ingested_world.store.read() as con:
        return checksums(con), ingest_totals(con)


# --- SIGKILL mid-write, then retry --------------------------------------------------------------

def test_killed_mid_ingestion_retry_equals_a_clean_run(ingested_world, fresh_home) -> None:
    home, store = fresh_home
    keys = landing.event_partitions(home / "landing")
    with store.write() as con:  # a published state from an earlier night: catalogue and 5 days
        ingest.ingest_items(con, home / "landing", ITEM_TYPES)
        ingest.ingest_users(con, home / "landing")
        for key in keys[:5]:
            ingest.ingest_events(con, home / "landing", key)
    with store.read() as con:
        published = checksums(con)
    with published_state_kept(store):
        # paused with the 10th partition's delete + insert done and its transaction still open
        writer = start_writer(store.database, home / "landing", pause_at="raw/events_insert", occurrence=10,
                              steps="ingest")
        wait_for(writer, "paused")
        with store.read() as con:
            assert checksums(con) == published  # readers see the last night meanwhile
        sigkill(writer)
    retried = _retry(store, home / "landing", ingested_world.params.as_of)
    assert retried == keys[9:]  # partitions 6-9 were committed before the kill; the 10th was rolled back
    expected, totals = _clean(ingested_world)
    with store.read() as con:
        assert checksums(con) == expected
        assert ingest_totals(con) == totals  # every partition logged once: nothing double counted


@pytest.mark.parametrize("pause_at", ["features/interactions", "features/co_listen_edges"])
def test_killed_mid_features_retry_equals_a_clean_run(ingested_world, tmp_path: Path, pause_at: str) -> None:
    store = ingested_world.copy_to(tmp_path / "home")
    landing_dir = tmp_path / "home" / "landing"
    other_as_of = (ingested_world.params.as_of - dt.timedelta(days=5)).isoformat()
    with published_state_kept(store):
        writer = start_writer(store.database, landing_dir, pause_at=pause_at, as_of=other_as_of, steps="features")
        wait_for(writer, "paused")  # some feature tables rebuilt for another as-of, the rest not yet
        sigkill(writer)
    assert _retry(store, landing_dir, ingested_world.params.as_of) == []
    expected, _ = _clean(ingested_world)
    with store.read() as con:
        assert checksums(con) == expected


def test_killed_mid_publish_leaves_readers_on_the_published_state_and_the_next_write_publishes(
    ingested_world, tmp_path: Path
) -> None:
    store = ingested_world.copy_to(tmp_path / "home")
    landing_dir = tmp_path / "home" / "landing"
    before = set(os.listdir(store.root))
    versions = {table: store.published_version(f"features.{table}") for table in FEATURE_TABLES}
    other_as_of = ingested_world.params.as_of - dt.timedelta(days=5)
    with published_state_kept(store):
        # every feature table rebuilt for another as-of and committed; published.json not yet replaced
        writer = start_writer(store.database, landing_dir, pause_at="publish", as_of=other_as_of.isoformat(),
                              steps="features")
        wait_for(writer, "paused")
        with store.audit() as con:
            assert con.execute("select max(end_at)::date from features.splits").fetchall() == [(other_as_of,)]
        unplaced = {path.name for path in store.root.glob(f".{STATE}.*")}
        assert unplaced  # the new state written beside published.json
        sigkill(writer)
    _retry(store, landing_dir, ingested_world.params.as_of)
    assert all(store.published_version(f"features.{table}") > version for table, version in versions.items())
    expected, _ = _clean(ingested_world)
    with store.read() as con:
        assert checksums(con) == expected
    # what the killed process left is its unplaced state file, which nothing reads; the retry left nothing
    assert set(os.listdir(store.root)) - before <= unplaced


def test_killed_at_random_moments_converges(ingested_world, fresh_home) -> None:
    home, store = fresh_home
    with store.write() as con:
        con.execute("select 1")  # publish the empty tables: a state for readers to keep
    rng = random.Random(7)
    for _ in range(2):
        with published_state_kept(store):
            writer = start_writer(store.database, home / "landing", as_of=ingested_world.params.as_of.isoformat())
            wait_for(writer, "writing")
            time.sleep(rng.uniform(0.2, 1.5))  # somewhere inside ingestion: a statement, a commit or between
            if writer.poll() is None:
                sigkill(writer)
    _retry(store, home / "landing", ingested_world.params.as_of)
    expected, totals = _clean(ingested_world)
    with store.read() as con:
        assert checksums(con) == expected
        assert ingest_totals(con) == totals


# --- broken landing files -----------------------------------------------------------------------

def _accounted(result: ingest.IngestResult) -> None:
    assert result.read == result.accepted + result.rejected + result.duplicates


def _stored_ids(store: Store) -> list[str]:
    with store.read() as con:
        return [row[0] for row in con.execute("select event_id from raw.events order by event_id").fetchall()]


def _good_rows(hand_landing, prefix: str, count: int = 4) -> list[dict]:
    return [hand_landing.event(f"{prefix}{n}", ts=f"{DAY}T0{n}:00:00Z") for n in range(count)]


@pytest.mark.parametrize("name", ["part-1.jsonl", "part-1.csv", "part-1.jsonl.gz"])
def test_a_file_truncated_mid_line_rejects_only_that_line(hand_landing, hand_store, ingest_hand, name: str) -> None:
    hand_landing.catalog()
    hand_landing.events(DAY, _good_rows(hand_landing, "a"), name="part-0.jsonl")
    path = hand_landing.events(DAY, _good_rows(hand_landing, "b"), name=name)
    text = (gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()).decode()
    cut = text[: text.rstrip("\n").rfind("\n") + 20]  # the last record loses its tail and its newline
    path.write_bytes(gzip.compress(cut.encode()) if name.endswith(".gz") else cut.encode())
    result = ingest_hand(DAY)[DAY]
    _accounted(result)
    assert (result.read, result.accepted, result.rejected) == (8, 7, 1)
    assert _stored_ids(hand_store) == ["a0", "a1", "a2", "a3", "b0", "b1", "b2"]
    with hand_store.read() as con:
        assert con.execute("select source_line, reason like 'broken_line%' from raw.rejected_events").fetchall() == [
            (5 if name.endswith(".csv") else 4, True)
        ]


@pytest.mark.parametrize("name", ["part-1.jsonl", "part-1.jsonl.gz", "part-1.csv", "part-1.csv.gz"])
def test_an_empty_file_adds_nothing(hand_landing, hand_store, ingest_hand, name: str) -> None:
    hand_landing.catalog()
    hand_landing.events(DAY, _good_rows(hand_landing, "a"), name="part-0.jsonl")
    path = hand_landing.root / "events" / f"date={DAY}" / name
    path.write_bytes(gzip.compress(b"") if name.endswith(".gz") else b"")
    result = ingest_hand(DAY)[DAY]
    assert (result.read, result.accepted, result.rejected, result.duplicates, result.files) == (4, 4, 0, 0, 2)


@pytest.mark.parametrize("name", ["part-1.jsonl", "part-1.csv", "part-1.parquet"])
def test_a_file_of_another_schema_is_quarantined_whole(hand_landing, hand_store, ingest_hand, name: str) -> None:
    hand_landing.catalog()
    hand_landing.events(DAY, _good_rows(hand_landing, "a"), name="part-0.jsonl")
    path = hand_landing.write(f"events/date={DAY}/{name}",
                              [{"song": f"s{n}", "listener": "x", "when": DAY} for n in range(3)])
    result = ingest_hand(DAY)[DAY]
    _accounted(result)
    assert (result.read, result.accepted, result.rejected) == (4, 4, 0)
    assert [(q.path, q.reason.split(":")[0]) for q in result.quarantined] == [(path, "wrong_schema")]
    assert _stored_ids(hand_store) == ["a0", "a1", "a2", "a3"]


@pytest.mark.parametrize("name", ["part-0.jsonl", "part-0.csv", "part-0.csv.gz"])
def test_a_byte_order_mark_is_not_part_of_the_first_field(hand_landing, hand_store, ingest_hand, name: str) -> None:
    hand_landing.catalog()
    hand_landing.events(DAY, _good_rows(hand_landing, "a"), name=name, bom=True)
    result = ingest_hand(DAY)[DAY]
    assert (result.read, result.accepted, result.rejected) == (4, 4, 0)
    assert _stored_ids(hand_store) == ["a0", "a1", "a2", "a3"]


@pytest.mark.parametrize("name", ["part-0.jsonl", "part-0.csv"])
def test_bytes_that_are_not_utf8_are_rejected_with_their_line(hand_landing, hand_store, ingest_hand, name: str) -> None:
    hand_landing.catalog()
    rows = [*_good_rows(hand_landing, "a", 3), hand_landing.event("latin", context="CAFE_MARK")]
    path = hand_landing.events(DAY, rows, name=name)
    path.write_bytes(path.read_bytes().replace(b"CAFE_MARK", "caf\u00e9".encode("latin-1")))
    result = ingest_hand(DAY)[DAY]
    _accounted(result)
    with hand_store.read() as con:
        stored = dict(con.execute("select event_id, context from raw.events").fetchall())
        rejected = con.execute("select reason from raw.rejected_events").fetchall()
    assert {key: stored[key] for key in ("a0", "a1", "a2")} == {"a0": "home", "a1": "home", "a2": "home"}
    # the Latin-1 line is either refused with a reason or stored; never silently dropped
    assert (result.accepted, result.rejected) in {(3, 1), (4, 0)}
    assert len(rejected) == result.rejected
    if "latin" in stored:
        assert stored["latin"].startswith("caf")


def test_a_ten_times_larger_file_is_counted_exactly(ingested_world, hand_landing, hand_store, ingest_hand) -> None:
    """Ten partitions' worth of rows in one file, with known repeats and bad rows."""
    hand_landing.catalog()
    usual = max(result.read for result in ingested_world.events.values())
    size = 10 * usual
    rows = [hand_landing.event(f"e{n:06d}", ts=f"{DAY}T{n % 24:02d}:{n % 60:02d}:00Z", ms_played=n) for n in range(size)]
    repeats = rows[: size // 20]  # 5% sent twice
    bad = [hand_landing.event(f"bad{n}", event_type="dance") for n in range(size // 50)]
    hand_landing.events(DAY, rows + repeats + bad, name="big.jsonl")
    hand_landing.events(DAY, rows[:100], name="big-resend.csv")  # and some again in another format
    result = ingest_hand(DAY)[DAY]
    _accounted(result)
    assert (result.read, result.accepted, result.rejected, result.duplicates) == (
        size + len(repeats) + len(bad) + 100, size, len(bad), len(repeats) + 100
    )
    with hand_store.read() as con:
        assert con.execute("select count(*), count(distinct event_id), sum(ms_played) from raw.events").fetchall() == [
            (size, size, sum(range(size)))
        ]


@pytest.mark.parametrize("name", ["part-1.parquet", "part-1.jsonl.gz", "part-1.csv.gz"])
def test_a_corrupt_file_is_quarantined_by_name_and_the_rest_of_its_partition_stored(
    hand_landing, hand_store, ingest_hand, name: str
) -> None:
    hand_landing.catalog()
    hand_landing.events(DAY, _good_rows(hand_landing, "a"), name="part-0.jsonl")
    ingest_hand(DAY)
    path = hand_landing.events(DAY, _good_rows(hand_landing, "b"), name=name)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy cut short
    result = ingest_hand(DAY)[DAY]
    _accounted(result)
    assert [(q.path, q.reason.split(":")[0]) for q in result.quarantined] == [(path, "unreadable")]
    assert _stored_ids(hand_store) == ["a0", "a1", "a2", "a3"]


# --- the write lock held by another process; a reader mid-transaction; a full disk ----------------

def test_another_writer_holding_the_lock_gives_a_clear_busy_error(ingested_world, tmp_path: Path, writer_process) -> None:
    store = ingested_world.copy_to(tmp_path / "home")
    with writer_process(store.database) as holder:
        impatient = Store(store.database, lock_timeout_s=1.0)
        with published_state_kept(store):  # the holder has written, not published
            started = time.monotonic()
            with pytest.raises(WarehouseBusyError) as raised, impatient.write():
                pass
            assert time.monotonic() - started < 20
            with store.read() as con:  # readers are not affected
                assert con.execute("select count(*) from raw.users").fetchall() == [(ingested_world.summary.users,)]
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    assert str(store.root / "crossfade.sqlite") in str(raised.value) and "wait for its run" in str(raised.value)
    with store.write() as con:  # once the other writer is done, writes go through
        con.execute("select 1")
    with store.read() as con:
        assert con.execute("select answer from main.written_meanwhile").fetchall() == [(42,)]


# A reader inside a transaction, as during any query it runs: it holds the catalog until it ends or is killed.
READER = """
import sys
from pathlib import Path

from warehouse.store import Store

with Store(Path(sys.argv[1])).read() as con:
    con.execute("begin transaction")
    con.execute("select count(*) from raw.users").fetchall()
    print("reading", flush=True)
    sys.stdin.readline()
"""


def test_a_reader_in_a_transaction_never_blocks_a_writer(ingested_world, tmp_path: Path) -> None:
    store = ingested_world.copy_to(tmp_path / "home")
    reader = subprocess.Popen([sys.executable, "-c", READER, str(store.database)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        wait_for(reader, "reading")
        started = time.monotonic()
        with store.write() as con:
            con.execute("create table main.tonight as select 1 as answer")
        assert time.monotonic() - started < 20
        assert reader.poll() is None  # the reader was still in its transaction all along
    finally:
        reader.kill()
        reader.wait(timeout=30)
    with store.read() as con:
        assert con.execute("select answer from main.tonight").fetchall() == [(1,)]


@pytest.mark.parametrize("failing", ["write", "replace"])
def test_a_full_disk_on_publish_keeps_the_published_state_and_cleans_up(
    ingested_world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    store = ingested_world.copy_to(tmp_path / "home")
    before = set(os.listdir(store.root))
    real_write_text, real_replace = Path.write_text, os.replace

    def write_half_then_fail(path: Path, text: str, *args: str | None, **kwargs: str | None) -> int:
        if not path.name.startswith(f".{STATE}."):
            return real_write_text(path, text, *args, **kwargs)
        real_write_text(path, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    def replace_state_fails(source: str | Path, target: str | Path) -> None:
        if Path(target).name == STATE:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real_replace(source, target)

    if failing == "write":
        monkeypatch.setattr(Path, "write_text", write_half_then_fail)
    else:
        monkeypatch.setattr(os, "replace", replace_state_fails)
    with published_state_kept(store):  # committed in the catalog, never published
        with pytest.raises(OSError, match="No space left"), store.write() as con:
            con.execute("create table main.tonight as select 1 as answer")
    left = set(os.listdir(store.root)) - before
    monkeypatch.undo()
    with store.write() as con:  # space again: the retried write publishes
        con.execute("create or replace table main.tonight as select 1 as answer")
    with store.read() as con:
        assert con.execute("select answer from main.tonight").fetchall() == [(1,)]
    assert left == set(), f"the failed publish left {sorted(left)} in {store.root}"


# --- the LLM endpoint down, slow, or answering garbage -------------------------------------------

def _requests(count: int) -> list:
    return [item_request({"item_id": f"a{n}", "item_type": "audiobook", "title": f"Book {n}"}) for n in range(count)]


@pytest.mark.parametrize("endpoint", ["down", "slow", "status_500"])
def test_an_endpoint_that_fails_defers_work_and_caches_nothing(endpoint: str) -> None:
    cache, con = BufferedCache({}), duckdb.connect()
    requests = _requests(10)
    with llm_stub("slow" if endpoint == "slow" else "status_500", delay_s=2.0) as (url, _):
        base = closed_port_url() if endpoint == "down" else url
        with OpenAICompatible(base, "stub", timeout_s=0.3, max_retries=1, backoff_s=0.01, max_concurrency=2) as model:
            started = time.monotonic()
            batch = run_batch(model, requests, cache, budget=8, max_backend_errors=3)
    LLMCache(con).put_many(cache.new_rows)  # what the enrichment assets store after their calls
    assert time.monotonic() - started < 30
    assert batch.backend_errors >= 3 and batch.failures == batch.calls == batch.backend_errors
    assert len(batch.results) + len(batch.deferred) == len(requests)  # every item answered or left for later
    assert all(result.status == "failed" and result.error for result in batch.results)
    assert con.execute("select count(*) from enrich.llm_cache").fetchall() == [(0,)]  # retried next run


def test_an_endpoint_answering_invalid_json_records_failures_within_budget() -> None:
    cache, con = BufferedCache({}), duckdb.connect()
    requests = _requests(6)
    with llm_stub("invalid_json") as (url, seen):
        with OpenAICompatible(url, "stub", max_retries=0, max_concurrency=2) as model:
            batch = run_batch(model, requests, cache, budget=4, attempts=2)
    LLMCache(con).put_many(cache.new_rows)
    assert (batch.calls, batch.attempts, batch.failures, batch.backend_errors) == (4, 8, 4, 0)
    assert len(seen) == 8 and len(batch.deferred) == 2
    rows = con.execute("select status, raw_text, error is not null from enrich.llm_cache").fetchall()
    assert rows == [("failed", "this is not JSON {", True)] * 4  # cached as failed: not asked again and again


def test_the_item_topics_asset_completes_with_the_endpoint_down(ingested_world, crossfade_home: Path) -> None:
    import dagster as dg

    from assets import enrich
    from assets.resources import Crossfade, LLMBackend, Warehouse

    ingested_world.copy_to(crossfade_home)
    (crossfade_home / "crossfade.yaml").write_text(json.dumps({
        "llm_backend": "http", "llm_base_url": closed_port_url(), "llm_model": "stub", "llm_timeout_s": 0.5,
        "llm_call_budget": 6, "llm_max_concurrency": 3,
    }))
    result = dg.materialize(
        with_gates([enrich.enrich_item_topics]), resources={"crossfade": Crossfade(), "warehouse": Warehouse(), "llm": LLMBackend()},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    # it stops starting calls after 3 endpoint errors; calls already in flight finish (3 at a time)
    assert 3 <= metadata["backend_errors"].value == metadata["calls"].value <= 6
    assert metadata["left_for_next_run"].value == metadata["dagster/row_count"].value  # all pending, none lost
    with Store(crossfade_home / "warehouse" / "crossfade.duckdb").read() as con:
        assert con.execute("select distinct status from enrich.item_topics").fetchall() == [("pending",)]
        assert con.execute("select count(*) from enrich.llm_cache").fetchall() == [(0,)]
