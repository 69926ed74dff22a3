"""The code location: every asset, check, job, schedule, sensor and resource of crossfade."""
import dagster as dg

import assets
from pipelines.candidate_shards import candidate_shards_job
from pipelines.jobs import ingest_job, nightly_job, refresh_job
from assets.resources import Crossfade, LLMBackend, Warehouse
from pipelines.schedules import landing_sensor, nightly_schedule
from warehouse.settings import Settings, load_settings


def executor_for(settings: Settings) -> dg.ExecutorDefinition:
    """The executor `settings.executor` names; k8s runs every step as a Kubernetes Job (deploy/k8s)."""
    if settings.executor == "k8s":
        from dagster_k8s import k8s_job_executor  # only the cluster image needs the Kubernetes client

        return k8s_job_executor
    if settings.executor == "in_process":
        return dg.in_process_executor
    return dg.multi_or_in_process_executor  # Dagster's default: processes, unless a run's config picks in_process


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=dg.load_assets_from_package_module(assets),  # one module per stage under assets/
        asset_checks=dg.load_asset_checks_from_package_module(assets),
        jobs=[ingest_job, nightly_job, refresh_job, candidate_shards_job()],
        schedules=[nightly_schedule],
        sensors=[landing_sensor],
        resources={"crossfade": Crossfade(), "warehouse": Warehouse(), "llm": LLMBackend()},
        executor=executor_for(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location of workspace.yaml, built from settings when Dagster loads it (not at import)."""
    return build_definitions(load_settings())
