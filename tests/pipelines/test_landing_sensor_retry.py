"""The landing sensor requests a partition again when the run it asked for failed, up to MAX_RETRIES times."""
from __future__ import annotations

import json
from collections.abc import Iterator

import dagster as dg
import pytest

from pipelines.definitions import defs as load_definitions
from pipelines.schedules import MAX_RETRIES, landing_sensor

defs = load_definitions()

DAYS = ("2026-10-30", "2026-10-31", "2026-11-01")
FAILED, CANCELED = dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED
SUCCEEDED, STARTED = dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.STARTED


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def landed(crossfade_home, hand_landing):
    """Three complete arrival days in CROSSFADE_HOME's landing zone."""
    for day in DAYS:
        hand_landing.events(day, [hand_landing.event(f"e-{day}", ts=f"{day}T08:00:00Z")])
    return hand_landing


def tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[list[dg.RunRequest], str, str | None]:
    """The run requests, cursor and skip message of one evaluation."""
    result = landing_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))
    return result.run_requests or [], result.cursor, result.skip_message


def partitions(requests: list[dg.RunRequest]) -> list[str]:
    return [request.partition_key for request in requests]


def launch(instance: dg.DagsterInstance, request: dg.RunRequest, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    """The ingest run the sensor daemon would launch for `request`, ended (or not) with `status`."""
    tags = {**request.tags, "dagster/run_key": request.run_key, "dagster/sensor_name": landing_sensor.name}
    return instance.create_run_for_job(defs.resolve_job_def("ingest"), tags=tags, status=status)


def first_tick(instance: dg.DagsterInstance, statuses: dict[str, dg.DagsterRunStatus]) -> str:
    """Requests every landed day and launches their runs, ending as `statuses` say (the others succeed)."""
    requests, cursor, _ = tick(instance, None)
    assert partitions(requests) == list(DAYS)
    for request in requests:
        launch(instance, request, statuses.get(request.partition_key, SUCCEEDED))
    return cursor


def fail_every_retry(instance: dg.DagsterInstance, cursor: str) -> str:
    """The cursor after MAX_RETRIES retries of the one failed partition, each failed too."""
    for attempt in range(1, MAX_RETRIES + 1):
        requests, cursor, _ = tick(instance, cursor)
        assert len(requests) == 1, f"retry {attempt}"
        launch(instance, requests[0], FAILED)
    return cursor


@pytest.mark.parametrize("status", [FAILED, CANCELED])
def test_a_failed_or_canceled_run_is_requested_again_with_a_new_run_key(landed, instance, status) -> None:
    cursor = first_tick(instance, {DAYS[1]: status})
    (first,) = instance.get_runs(filters=dg.RunsFilter(statuses=[status]))
    requests, cursor, _ = tick(instance, cursor)
    assert partitions(requests) == [DAYS[1]]
    assert requests[0].run_key not in (first.tags["dagster/run_key"], None)
    assert json.loads(cursor)[DAYS[1]]["attempt"] == 1


def test_succeeded_runs_are_not_requested_again(landed, instance) -> None:
    cursor = first_tick(instance, {})
    for _ in range(2):
        requests, cursor, skip = tick(instance, cursor)
        assert requests == [] and "retries" not in (skip or "")
    assert not any(entry["watching"] for entry in json.loads(cursor).values())


def test_a_run_still_going_is_waited_for(landed, instance) -> None:
    cursor = first_tick(instance, {DAYS[0]: STARTED})
    requests, cursor, _ = tick(instance, cursor)
    assert requests == []
    (running,) = instance.get_runs(filters=dg.RunsFilter(statuses=[STARTED]))
    instance.report_run_failed(running)
    assert partitions(tick(instance, cursor)[0]) == [DAYS[0]]


def test_retries_stop_at_the_maximum(landed, instance) -> None:
    cursor = fail_every_retry(instance, first_tick(instance, {DAYS[2]: FAILED}))
    run_keys = {run.tags["dagster/run_key"] for run in instance.get_runs(filters=dg.RunsFilter(statuses=[FAILED]))}
    assert len(run_keys) == 1 + MAX_RETRIES
    requests, cursor, skip = tick(instance, cursor)
    assert requests == []
    assert skip.startswith(f"ingest {DAYS[2]}: run ") and f"failed after {MAX_RETRIES} retries" in skip
    requests, _, skip = tick(instance, cursor)
    assert requests == [] and DAYS[2] not in (skip or "")  # given up once, said once
    assert len(instance.get_runs()) == len(DAYS) + MAX_RETRIES


def test_changed_files_are_requested_anew_after_the_retries_ran_out(landed, instance) -> None:
    cursor = fail_every_retry(instance, first_tick(instance, {DAYS[0]: FAILED}))
    _, cursor, _ = tick(instance, cursor)  # gives up
    landed.events(DAYS[0], [landed.event("fixed", ts=f"{DAYS[0]}T09:00:00Z")], name="part-1.csv")
    requests, cursor, _ = tick(instance, cursor)
    assert partitions(requests) == [DAYS[0]]
    assert json.loads(cursor)[DAYS[0]]["attempt"] == 0
    launch(instance, requests[0], FAILED)
    assert partitions(tick(instance, cursor)[0]) == [DAYS[0]]  # with retries of its own


def test_a_cursor_from_before_retries_has_its_failed_runs_retried(landed, instance) -> None:
    cursor = first_tick(instance, {DAYS[1]: FAILED})
    fingerprints = json.dumps({key: entry["files"] for key, entry in json.loads(cursor).items()})
    requests, cursor, _ = tick(instance, fingerprints)
    assert partitions(requests) == [DAYS[1]]
    assert sorted(json.loads(cursor)) == list(DAYS)
