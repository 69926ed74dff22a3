"""Adversarial input: hostile identifiers and text pass through unchanged, partition paths are refused, keys never leak."""
from __future__ import annotations

import datetime as dt
import json
import secrets
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from models.item_topics import ItemTopics, item_request
from models.llm import LLMError, OpenAICompatible, generate
from pipelines import cli
from tests.reliability.conftest import llm_stub
from warehouse import lake, landing
from warehouse.features import FEATURE_TABLES, FeatureParams, build_table
from warehouse.store import Store

pytestmark = pytest.mark.slow
DAY = "2026-11-01"
NASTY = {
    "sql": "'; drop table raw.events; --",
    "sql_double": 'x"; delete from raw.users where ""="',
    "parameter": "$arrival_date or 1=1",
    "quotes": "it's \"quoted\" `back` \\slash \\' \\\"",
    "control": "bell\x07 tab\t cr\r lf\n vt\x0b esc\x1b del\x7f end",
    "emoji": "🎧 podcast 🎙️ 📚 — ñ 中文 עברית 👩‍👩‍👧",
    "long": "l" + "ong" * 33_333,  # 100k characters
    "json": '{"event_id": "forged", "user_id": "root"}',
    "csv": 'a,b,"c",\nd,"e',
    "format": "%s {0} {event_id} %(x)s",
}


def _write_world(hand_landing, fmt: str) -> None:
    """One podcast, one user and one event per hostile string, which is each of their ids and texts."""
    items = [hand_landing.item(f"p-{key}-{value}", "podcast", title=value, description=value, creator=value,
                               genres=[value]) for key, value in NASTY.items()]
    users = [hand_landing.user(f"u-{key}-{value}", plan=value, age_bucket=value) for key, value in NASTY.items()]
    hand_landing.write(f"items/items.{fmt}", items)
    hand_landing.write(f"users/users.{fmt}", users)
    events = [hand_landing.event(f"e-{key}-{value}", user_id=f"u-{key}-{value}", item_id=f"p-{key}-{value}",
                                 ts=f"{DAY}T0{n}:00:00Z", context=value, country=value)
              for n, (key, value) in enumerate(NASTY.items())]
    hand_landing.events(DAY, events, name=f"part-0.{fmt}")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_hostile_strings_pass_through_unchanged(hand_landing, hand_store, ingest_hand, fmt: str) -> None:
    _write_world(hand_landing, fmt)
    result = ingest_hand(DAY)[DAY]
    assert (result.read, result.accepted, result.rejected, result.duplicates) == (len(NASTY), len(NASTY), 0, 0)
    with hand_store.write() as con:
        for name in FEATURE_TABLES:  # every feature query runs over them too
            build_table(con, name, FeatureParams(as_of=dt.date(2026, 11, 2), graph_types=("podcast", "audiobook")))
    with hand_store.read() as con:
        events = {row[0]: row[1:] for row in con.execute(
            "select event_id, user_id, item_id, context, country from raw.events").fetchall()}
        items = {row[0]: row[1:] for row in con.execute(
            "select item_id, title, description, creator, genres from raw.items").fetchall()}
        users = {row[0]: row[1:] for row in con.execute("select user_id, plan, age_bucket from raw.users").fetchall()}
        interactions = {row[0] for row in con.execute("select user_id from features.interactions").fetchall()}
        stats = {row[0] for row in con.execute("select user_id from features.user_stats where count_events = 0").fetchall()}
        tables = con.execute("select count(*) from duckdb_tables() where schema_name in ('raw', 'features')").fetchall()
    for key, value in NASTY.items():
        assert events[f"e-{key}-{value}"] == (f"u-{key}-{value}", f"p-{key}-{value}", value, value), key
        assert items[f"p-{key}-{value}"] == (value, value, value, [value]), key
        assert users[f"u-{key}-{value}"] == (value, value), key
    assert interactions == set(users)  # the holdout period holds every event
    assert stats == set(users)  # ... and the train period none
    assert tables[0][0] >= 6 + len(FEATURE_TABLES)  # nothing dropped


@pytest.mark.parametrize("key", ["../../etc", "2026-11-01/../../x", "date=2026-11-01", "2026-11-01\n", "2026-11-1",
                                 "2026-13-01", "..", "/2026-11-01", "2026-11-01; drop table raw.events"])
def test_path_traversal_in_partition_keys_is_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(landing.LandingError, match="partition key"):
        landing.parse_partition(key)
    with pytest.raises(landing.LandingError):
        landing.event_partition_dir(tmp_path, key)


def test_odd_partition_folders_are_never_listed(tmp_path: Path) -> None:
    events = tmp_path / "landing" / "events"
    for name in ("date=2026-11-01", "date=..", "date=2026-11-01 ", "date=2026-11-01.bak", "date=..%2F..", "x"):
        (events / name).mkdir(parents=True)
    with pytest.warns(landing.LandingWarning):
        assert landing.event_partitions(tmp_path / "landing") == ["2026-11-01"]
    (events / "date=2026-02-30").mkdir()  # looks like a date, is not one: skipped loudly, never hides the others
    with pytest.warns(landing.LandingWarning, match="2026-02-30"):
        assert landing.event_partitions(tmp_path / "landing") == ["2026-11-01"]


@pytest.mark.parametrize("value", ["../../etc", "2026-11-01/..", "yesterday"])
def test_the_cli_refuses_a_path_as_a_date(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--as-of", value])
    assert exited.value.code == 2
    assert "expected YYYY-MM-DD" in capsys.readouterr().err


def test_the_events_asset_refuses_a_path_as_a_partition(crossfade_home: Path) -> None:
    from assets import raw
    from assets.resources import Crossfade, Warehouse

    with pytest.raises(dg.DagsterUnknownPartitionError, match="../../etc"):
        dg.materialize([raw.raw_items, raw.raw_events], partition_key="../../etc",
                       resources={"crossfade": Crossfade(), "warehouse": Warehouse()})
    assert not (crossfade_home / "warehouse").exists()  # refused before anything ran


# --- a planted API key ---------------------------------------------------------------------------

def _tables_containing(store: Store, needle: str) -> list[str]:
    """Tables of the newest state, published or not (a gate may yet publish them), with a row holding `needle`."""
    with store.audit() as con:
        names = [f"{schema}.{table}" for schema, table in con.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = current_database()").fetchall()]
        return [name for name in names
                if con.execute(f"select count(*) from {name} as t where strpos(cast(t as varchar), $n) > 0",
                               {"n": needle}).fetchall()[0][0]]


def _data_files_containing(store: Store, needle: str) -> list[Path]:
    """Every Parquet file of the lake, older snapshots' and deletion files too, with a row holding `needle`: their
    pages are compressed, so a byte scan alone would not find it."""
    files = sorted((store.root / lake.DATA).rglob("*.parquet"))
    with duckdb.connect() as con:
        return [path for path in files if con.execute(
            "select count(*) from read_parquet($path) as t where strpos(cast(t as varchar), $n) > 0",
            {"path": str(path), "n": needle}).fetchall()[0][0]]


@pytest.mark.parametrize("mode", ["echo_401", "echo_200"])
def test_a_planted_api_key_never_leaves_the_request(
    mode: str, ingested_world, crossfade_home: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from assets import enrich
    from assets.resources import Crossfade, LLMBackend, Warehouse

    key = "sk-planted-" + secrets.token_hex(16)
    monkeypatch.setenv("CROSSFADE_LLM_API_KEY", key)
    ingested_world.copy_to(crossfade_home)
    with llm_stub(mode) as (url, seen):
        # the endpoint itself misbehaves: its error page or its answer repeats the request headers, key included
        (crossfade_home / "crossfade.yaml").write_text(json.dumps({
            "llm_backend": "http", "llm_base_url": url, "llm_model": "stub", "llm_call_budget": 4,
            "llm_max_concurrency": 1,
        }))
        instance = dg.DagsterInstance.get()  # on the home's DAGSTER_HOME: events are stored on disk
        result = dg.materialize(
            [enrich.enrich_item_topics], resources={"crossfade": Crossfade(), "warehouse": Warehouse(), "llm": LLMBackend()},
            instance=instance, raise_on_error=False,
        )
        with OpenAICompatible(url, "stub", api_key=key, max_retries=0) as model:
            try:  # the 401 page raises; the 200 answer comes back as a completion
                answered = model.complete([{"role": "user", "content": "hi"}], ItemTopics.model_json_schema(),
                                          max_tokens=8, temperature=0.0, seed=0).text
            except LLMError as error:
                answered = f"{error} {error!r} {error.raw_text}"
            generation = generate(model, item_request({"item_id": "a1", "title": "t"}).messages, ItemTopics, max_tokens=8)
    assert result.success
    assert seen and all(headers.get("Authorization") == f"Bearer {key}" for headers in seen)  # it really was sent
    records = instance.all_logs(result.run_id)
    assert records and not [record for record in records if key in repr(record)]
    output = capfd.readouterr()
    assert key not in output.out + output.err + caplog.text
    assert "[redacted api key]" in answered and key not in answered + repr(model)
    assert key not in (generation.error or "") + generation.raw_text
    store = Store(crossfade_home / "warehouse" / "crossfade.duckdb")
    # both scans reach the run's rows, unpublished (no gate ran) and naming the stub model
    assert "enrich.item_topics" in _tables_containing(store, "stub") and _data_files_containing(store, "stub")
    assert _tables_containing(store, key) == []
    assert _data_files_containing(store, key) == []
    # the rest byte for byte: the DuckLake catalog (SQLite), published.json and .sql, Dagster's event log
    leaked = [path for path in crossfade_home.rglob("*") if path.is_file() and key.encode() in path.read_bytes()]
    assert leaked == []
