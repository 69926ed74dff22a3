"""The nightly schedule and the landing-zone sensor."""
from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from pipelines.jobs import ingest_job, nightly_job
from warehouse.settings import load_settings
from warehouse import landing

nightly_schedule = dg.build_schedule_from_partitioned_job(
    nightly_job, hour_of_day=2, minute_of_hour=0,
    description="Every night at 02:00 UTC: ingest yesterday's arrivals and refresh everything downstream.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Requests an ingest run for each events partition whose files are new or changed (complete days only)."""
    root = load_settings().landing
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    requests = []
    for key in landing.event_partitions(root):
        if key >= today:
            continue  # today's folder is still filling
        files = landing.data_files(landing.event_partition_dir(root, key))
        print_ = landing.fingerprint(files)
        if files and seen.get(key) != print_:
            requests.append(dg.RunRequest(partition_key=key, run_key=f"{key}:{print_}"))
            seen[key] = print_
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
