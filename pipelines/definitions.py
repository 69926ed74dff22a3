"""The code location: every asset, check, job, schedule, sensor and resource of crossfade."""
import dagster as dg

import assets
from pipelines.jobs import ingest_job, nightly_job, refresh_job
from pipelines.llm import LLMBackend
from pipelines.resources import Crossfade, Warehouse
from pipelines.schedules import landing_sensor, nightly_schedule

defs = dg.Definitions(
    assets=dg.load_assets_from_package_module(assets),  # one module per stage under assets/
    asset_checks=dg.load_asset_checks_from_package_module(assets),
    jobs=[ingest_job, nightly_job, refresh_job],
    schedules=[nightly_schedule],
    sensors=[landing_sensor],
    resources={"crossfade": Crossfade(), "warehouse": Warehouse(), "llm": LLMBackend()},
)
