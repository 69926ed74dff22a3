"""The code location: every asset, check, job, schedule, sensor and resource of crossfade."""
from __future__ import annotations

import dagster as dg

from assets import raw
from assets.features import feature_assets, feature_checks
from pipelines.jobs import ingest_job, nightly_job, refresh_job
from pipelines.resources import Crossfade, Warehouse
from pipelines.schedules import landing_sensor, nightly_schedule

defs = dg.Definitions(
    assets=[raw.raw_items, raw.raw_users, raw.raw_events, *feature_assets],
    asset_checks=[raw.raw_items_suite, raw.raw_users_suite, raw.raw_events_suite, *feature_checks],
    jobs=[ingest_job, nightly_job, refresh_job],
    schedules=[nightly_schedule],
    sensors=[landing_sensor],
    resources={"crossfade": Crossfade(), "warehouse": Warehouse()},
)
