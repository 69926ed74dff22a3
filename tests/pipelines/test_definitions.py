"""The code location: what it defines, and a failing gate stopping everything downstream in the same run."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from pipelines.definitions import defs as load_definitions

defs = load_definitions()

RAW_EVENTS = dg.AssetKey(["raw", "events"])
FOUNDATION = {
    ("raw", "events"), ("raw", "items"), ("raw", "users"), ("features", "splits"), ("features", "interactions"),
    ("features", "user_stats"), ("features", "item_stats"), ("features", "co_listen_edges"),
}
SCHEMAS = {"raw", "features", "enrich", "models", "eval", "serving"}


def keys(job_name: str) -> set[tuple[str, ...]]:
    return {tuple(key.path) for key in defs.resolve_job_def(job_name).asset_layer.executable_asset_keys}


def test_the_code_location_loads() -> None:
    dg.Definitions.validate_loadable(defs)


def test_every_asset_is_named_after_its_table() -> None:
    graph = defs.resolve_asset_graph()
    asset_keys = {tuple(key.path) for key in graph.get_all_asset_keys()}
    assert FOUNDATION <= asset_keys
    assert all(len(key) == 2 and key[0] in SCHEMAS for key in asset_keys), asset_keys
    for key in FOUNDATION:
        assert graph.get(dg.AssetKey(list(key))).group_name == key[0]


def test_every_foundation_table_has_a_blocking_suite() -> None:
    blocking = {tuple(spec.asset_key.path): spec.blocking for checks in defs.asset_checks for spec in checks.check_specs}
    assert {key: blocking.get(key) for key in FOUNDATION} == dict.fromkeys(FOUNDATION, True)


def test_only_raw_events_is_partitioned_by_arrival_day() -> None:
    graph = defs.resolve_asset_graph()
    partitions = graph.get(RAW_EVENTS).partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions.timezone == "UTC" and partitions.start == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert {key for key in FOUNDATION if graph.get(dg.AssetKey(list(key))).partitions_def is not None} == {("raw", "events")}


def test_jobs_select_their_stages() -> None:
    assert keys("ingest") == {("raw", "events"), ("raw", "items"), ("raw", "users")}
    assert FOUNDATION <= keys("nightly")
    assert ("raw", "events") not in keys("refresh") and FOUNDATION - {("raw", "events")} <= keys("refresh")


def test_schedule_and_sensor_target_their_jobs() -> None:
    schedule = defs.resolve_schedule_def("nightly_schedule")
    sensor = defs.resolve_sensor_def("landing_sensor")
    assert (schedule.job_name, schedule.cron_schedule, schedule.execution_timezone) == ("nightly", "0 2 * * *", "UTC")
    assert sensor.job_name == "ingest"


def test_resources_are_the_settings_and_the_warehouse() -> None:
    assert {"crossfade", "warehouse"} <= set(defs.resources)


# --- a bad partition in a real run --------------------------------------------------------------

DAY = "2026-11-01"


def _run_nightly(partition: str) -> dg.ExecuteInProcessResult:
    """The nightly job for one partition, up to the feature stage (later stages train models: other tests)."""
    selection = [key for key in defs.resolve_asset_graph().get_all_asset_keys() if key.path[0] in ("raw", "features")]
    return defs.resolve_job_def("nightly").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), partition_key=partition, raise_on_error=False, asset_selection=selection,
    )


def _break_partition(home: Path, ingested_world, share: float) -> tuple[int, int]:
    """Replace the day's files by one JSON-lines file of its good events with `share` of the lines cut short."""
    folder = home / "landing" / "events" / f"date={DAY}"
    with ingested_world.store.read() as con:
        lines = [row[0] for row in con.execute(
            "select to_json(struct_pack(event_id, user_id, item_id, ts := strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ'), "
            "event_type, ms_played, context, country))::varchar "
            "from raw.events where arrival_date = $day order by source_file, source_line",
            {"day": dt.date.fromisoformat(DAY)},
        ).fetchall()]
    broken = int(len(lines) * share)
    for path in folder.iterdir():
        path.unlink()
    (folder / "part-0.jsonl").write_text("\n".join([line[: len(line) // 2] for line in lines[:broken]] + lines[broken:]) + "\n")
    return len(lines), broken


@pytest.fixture
def nightly_home(ingested_world, crossfade_home: Path) -> Path:
    ingested_world.copy_to(crossfade_home)
    return crossfade_home


def test_a_good_partition_runs_every_stage(nightly_home: Path) -> None:
    result = _run_nightly(DAY)
    materialised = {tuple(event.asset_key.path) for event in result.get_asset_materialization_events()}
    checks = {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}
    assert result.success
    assert FOUNDATION <= materialised
    assert checks and all(checks.values()), checks


def test_a_bad_partition_is_stopped_by_its_gate(nightly_home: Path, ingested_world) -> None:
    read, broken = _break_partition(nightly_home, ingested_world, share=0.3)
    result = _run_nightly(DAY)

    materialised = {event.asset_key for event in result.get_asset_materialization_events()}
    downstream = dg.AssetSelection.assets(RAW_EVENTS).downstream(include_self=False).resolve(defs.resolve_asset_graph())
    assert not result.success
    assert RAW_EVENTS in materialised  # the partition was ingested: its broken lines are in raw.rejected_events
    assert {dg.AssetKey(["features", name]) for name in ("splits", "interactions")} <= downstream
    assert materialised & downstream == set()

    (gate,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "raw_events_suite"]
    assert not gate.passed
    failures = gate.metadata["failures"].value
    assert [(f["expectation"], f["column"], f["unexpected_count"]) for f in failures] == [
        ("expect_column_values_to_be_between", "reject_rate", 1),
    ]
    (events,) = [e for e in result.get_asset_materialization_events() if e.asset_key == RAW_EVENTS]
    metadata = {name: value.value for name, value in events.materialization.metadata.items()}
    assert (metadata["read"], metadata["rejected"], metadata["accounting_balances"]) == (read, broken, True)
    assert "| expect_column_values_to_be_between | reject_rate | 1 |" in gate.metadata["details"].value  # what the UI shows
