"""The landing sensor asks for new or changed partitions only; the nightly schedule asks for yesterday."""
from __future__ import annotations

import datetime as dt
import json
import os

import dagster as dg
import pytest

from pipelines.definitions import defs as load_definitions
from pipelines.schedules import landing_sensor, nightly_schedule

defs = load_definitions()

DAYS = ("2026-10-30", "2026-10-31", "2026-11-01")


def tick(cursor: str | None = None) -> tuple[list[dg.RunRequest], str | None]:
    # with the definitions, Dagster also checks each requested key is a partition of the ingest job
    result = landing_sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, definitions=defs))
    return result.run_requests or [], result.cursor


@pytest.fixture
def landed(crossfade_home, hand_landing):
    """Three complete arrival days in CROSSFADE_HOME's landing zone."""
    for day in DAYS:
        hand_landing.events(day, [hand_landing.event(f"e-{day}", ts=f"{day}T08:00:00Z")])
    return hand_landing


def test_first_tick_requests_every_landed_partition(landed) -> None:
    requests, cursor = tick()
    assert [request.partition_key for request in requests] == list(DAYS)
    assert all(request.run_key.startswith(f"{request.partition_key}:") for request in requests)
    assert sorted(json.loads(cursor)) == list(DAYS)


def test_nothing_new_means_no_requests(landed) -> None:
    _, cursor = tick()
    requests, again = tick(cursor)
    assert requests == []
    assert json.loads(again) == json.loads(cursor)


def test_a_changed_partition_is_requested_again_with_a_new_run_key(landed) -> None:
    first, cursor = tick()
    path = landed.events(DAYS[1], [landed.event("late-fix", ts="2026-10-31T09:00:00Z")], name="part-1.csv")
    requests, _ = tick(cursor)
    assert [request.partition_key for request in requests] == [DAYS[1]]
    assert requests[0].run_key != next(r.run_key for r in first if r.partition_key == DAYS[1])
    # touching a file is a change too: the same bytes may have been re-exported
    _, cursor = tick()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert [request.partition_key for request in tick(cursor)[0]] == [DAYS[1]]


def test_a_new_partition_is_requested_alone(landed) -> None:
    _, cursor = tick()
    landed.events("2026-11-02", [landed.event("new", ts="2026-11-02T08:00:00Z")])
    requests, cursor = tick(cursor)
    assert [request.partition_key for request in requests] == ["2026-11-02"]
    assert sorted(json.loads(cursor)) == [*DAYS, "2026-11-02"]


def test_today_and_empty_folders_wait(landed) -> None:
    _, cursor = tick()
    today = dt.datetime.now(dt.UTC).date().isoformat()
    landed.events(today, [landed.event("today", ts=f"{today}T00:00:01Z")])  # still filling
    (landed.root / "events" / "date=2026-11-02").mkdir()  # nothing landed yet
    (landed.root / "events" / "date=2026-11-03").mkdir()
    (landed.root / "events" / "date=2026-11-03" / "_SUCCESS").write_text("")
    assert tick(cursor)[0] == []


def test_an_empty_landing_zone_requests_nothing(crossfade_home) -> None:
    requests, cursor = tick()
    assert requests == [] and json.loads(cursor) == {}


@pytest.mark.parametrize(("scheduled", "partition"), [
    (dt.datetime(2026, 11, 2, 2, 0, tzinfo=dt.UTC), "2026-11-01"),
    (dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC), "2026-11-30"),  # across a month
    (dt.datetime(2027, 1, 1, 2, 0, tzinfo=dt.UTC), "2026-12-31"),  # and a year
])
def test_the_nightly_schedule_runs_yesterday(crossfade_home, scheduled: dt.datetime, partition: str) -> None:
    result = nightly_schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=scheduled))
    assert [(request.job_name, request.partition_key) for request in result.run_requests] == [("nightly", partition)]
    assert result.run_requests[0].tags["dagster/partition"] == partition
