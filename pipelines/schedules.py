"""The nightly schedule and the landing-zone sensor."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TypedDict

import dagster as dg

from pipelines.jobs import ingest_job, nightly_job
from warehouse.settings import load_settings
from warehouse import landing


class Entry(TypedDict):
    """The cursor's record of one partition: the files last requested and the run that follows them."""

    files: str  # landing.fingerprint of the partition's files
    attempt: int  # 0 for the first run of these files, then 1..MAX_RETRIES
    watching: bool  # the attempt's run may still fail and be retried


MAX_RETRIES = 3  # per partition and fingerprint; failing four times is the files or the code, not a blip
RETRY_ON = {dg.DagsterRunStatus.FAILURE: "failed", dg.DagsterRunStatus.CANCELED: "was canceled"}
RUN_KEY_TAG = "dagster/run_key"  # set by the sensor daemon on every run it launches for a run key

nightly_schedule = dg.build_schedule_from_partitioned_job(
    nightly_job, hour_of_day=2, minute_of_hour=0,
    description="Every night at 02:00 UTC: ingest yesterday's arrivals and refresh everything downstream.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Requests an ingest run for each events partition whose files are new or changed (complete days only),
    and again, up to MAX_RETRIES times, for one whose last requested run failed or was canceled."""
    state = _read_cursor(context.cursor)
    changed = _changed_partitions(load_settings().landing, state)
    for key, print_ in changed.items():
        state[key] = {"files": print_, "attempt": 0, "watching": True}
    retried, gave_up = _retry_failed(context, {key: e for key, e in state.items() if key not in changed})
    requests = [_run_request(key, state[key]) for key in [*changed, *retried]]
    return dg.SensorResult(
        run_requests=requests, cursor=json.dumps(state, sort_keys=True),
        skip_reason=None if requests or not gave_up else "; ".join(gave_up),
    )


def _read_cursor(cursor: str | None) -> dict[str, Entry]:
    """The cursor's entries; a fingerprint alone (cursors before retries) is a first run still watched."""
    seen = json.loads(cursor) if cursor else {}
    return {
        key: {"files": entry, "attempt": 0, "watching": True} if isinstance(entry, str) else entry
        for key, entry in seen.items()
    }


def _changed_partitions(root: Path, state: dict[str, Entry]) -> dict[str, str]:
    """Fingerprints of the complete partitions whose files are new or differ from the cursor's."""
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    changed = {}
    for key in landing.event_partitions(root):
        if key >= today:
            continue  # today's folder is still filling
        files = landing.data_files(landing.event_partition_dir(root, key))
        print_ = landing.fingerprint(files)
        if files and state.get(key, {}).get("files") != print_:
            changed[key] = print_
    return changed


def _retry_failed(context: dg.SensorEvaluationContext, state: dict[str, Entry]) -> tuple[list[str], list[str]]:
    """Partitions to request again, and a message for each that ran out of retries; updates their entries."""
    instance = _instance(context)
    retried, gave_up = [], []
    if instance is None:
        return retried, gave_up
    for key, entry in state.items():
        if not entry["watching"]:
            continue
        run = _last_run(instance, _run_key(key, entry))
        if run is None or not run.is_finished:
            continue  # not launched yet, or queued or running
        if run.status not in RETRY_ON:
            entry["watching"] = False  # it succeeded: only changed files request the partition again
            continue
        outcome = f"ingest {key}: run {run.run_id} {RETRY_ON[run.status]}"
        if entry["attempt"] >= MAX_RETRIES:
            entry["watching"] = False
            gave_up.append(
                f"{outcome} after {MAX_RETRIES} retries, not retried again; fix the files (changed files are "
                "requested anew) or the code and launch the partition from the UI"
            )
            context.log.warning(gave_up[-1])
        else:
            entry["attempt"] += 1
            retried.append(key)
            context.log.info(f"{outcome}; retry {entry['attempt']} of {MAX_RETRIES}")
    return retried, gave_up


def _instance(context: dg.SensorEvaluationContext) -> dg.DagsterInstance | None:
    """The instance whose runs the sensor follows; None in a context built without one (no runs to follow)."""
    try:
        return context.instance
    except dg.DagsterInvariantViolationError:
        return None


def _last_run(instance: dg.DagsterInstance, run_key: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=ingest_job.name, tags={RUN_KEY_TAG: run_key}), limit=1)
    return runs[0] if runs else None


def _run_key(key: str, entry: Entry) -> str:
    # a new key per attempt: the daemon launches nothing for a run key it has launched before
    return f"{key}:{entry['files']}" + (f":retry-{entry['attempt']}" if entry["attempt"] else "")


def _run_request(key: str, entry: Entry) -> dg.RunRequest:
    return dg.RunRequest(partition_key=key, run_key=_run_key(key, entry))
