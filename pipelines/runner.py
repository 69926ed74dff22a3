"""`crossfade run`: the nightly chain in-process on CROSSFADE_HOME, recorded in its Dagster instance."""
from __future__ import annotations

import copy
import datetime as dt
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import yaml

from assets.resources import AS_OF_TAG
from pipelines.summary import print_summary
from warehouse.settings import Settings, SettingsError
from warehouse import lake, landing
from warehouse.ingest import changed_partitions
from warehouse.store import NothingPublishedError, Store

HOST_TAG = "crossfade/host"  # the host and process id of the `crossfade run` that started a run
PID_TAG = "crossfade/pid"

DAGSTER_YAML = """\
# Written by crossfade: one run at a time, and across all runs one step at a time per concurrency pool;
# every step that writes the DuckDB file is in the pool assets.common.WAREHOUSE_POOL. Granularity op: each
# such step claims a slot in the instance's storage before it starts, whichever executor runs it (run would
# only hold runs in the run queue, which `crossfade run`, executing in process, never enters).
concurrency:
  runs:
    max_concurrent_runs: 1
  pools:
    default_limit: 1
    granularity: op
telemetry:
  enabled: false
"""
POOL_SETTINGS = yaml.safe_load(DAGSTER_YAML)["concurrency"]["pools"]


def prepare_dagster_home(settings: Settings) -> Path:
    """Create CROSSFADE_HOME/dagster with its dagster.yaml (unless DAGSTER_HOME points elsewhere)."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home).absolute()
    home.mkdir(parents=True, exist_ok=True)
    ensure_instance_config(home)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def ensure_instance_config(home: Path) -> Path:
    """Write home/dagster.yaml, or add the pool settings to one without them; what a person set there stays."""
    path = home / "dagster.yaml"
    if not path.exists():
        path.write_text(DAGSTER_YAML)
        return path
    config = yaml.safe_load(path.read_text()) or {}
    merged = with_pool_settings(config)
    if merged != config:
        path.write_text("# crossfade added concurrency.pools: one warehouse-writing step at a time across runs\n"
                        + yaml.safe_dump(merged, sort_keys=False))
    return path


def with_pool_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A dagster.yaml's settings with POOL_SETTINGS wherever it sets none.

    Dagster refuses `concurrency:` beside run limits set the older way (run_queue, or the QueuedRunCoordinator's
    config, as crossfade wrote them before pools), so those move to concurrency.runs.
    """
    merged = copy.deepcopy(config)
    concurrency = merged["concurrency"] = merged.get("concurrency") or {}
    for older in (merged.get("run_queue"), (merged.get("run_coordinator") or {}).get("config")):
        for field in ("max_concurrent_runs", "tag_concurrency_limits"):
            if isinstance(older, dict) and older.get(field) is not None:
                concurrency.setdefault("runs", {}).setdefault(field, older.pop(field))
    if merged.get("run_queue") == {}:
        del merged["run_queue"]
    concurrency["pools"] = {**POOL_SETTINGS, **(concurrency.get("pools") or {})}
    return merged


def free_slots_of_ended_runs(instance: dg.DagsterInstance) -> None:
    """Free the pool slots still held by runs that ended; name the unfinished runs that hold one.

    A step frees its slot when it succeeds or fails, but a process killed mid-step (kill -9, out of memory)
    leaves its run started and its slot held, and every later writing step would wait for it forever.
    A run `crossfade run` started on this host whose process is gone is marked failed, then freed.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    for run_id in sorted(storage.get_concurrency_run_ids()):
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished and process_gone(run.tags):
            instance.report_run_failed(run, f"its process {run.tags[PID_TAG]} on {run.tags[HOST_TAG]} is gone "
                                            "(killed, or out of memory); its pool slot is freed")
            _say(f"run {run_id[:8]} ({run.job_name}): its process {run.tags[PID_TAG]} is gone; marked failed")
            run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
        else:
            _say(f"run {run_id[:8]} ({run.job_name}, {run.status.value}) holds or awaits a pool slot: writing steps "
                 f"wait for it. If its process is gone, mark it canceled in the UI (Terminate, force) or delete it: "
                 f"DAGSTER_HOME={instance.root_directory} dagster run delete {run_id}")


def process_tags() -> dict[str, str]:
    """The tags naming this process, which `crossfade run` puts on its runs."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def process_gone(tags: Mapping[str, str]) -> bool:
    """Whether the tags name a process on this host that no longer runs (False where they name none)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    pid = int(tags[PID_TAG])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _partitions_to_ingest(settings: Settings, as_of: dt.date | None) -> list[str]:
    store = Store(settings.database)
    try:
        with store.read() as con:
            return changed_partitions(con, settings.landing, before=as_of)
    except (NothingPublishedError, duckdb.CatalogException):
        keys = landing.event_partitions(settings.landing)
        return [key for key in keys if as_of is None or dt.date.fromisoformat(key) < as_of]


def _execute(job_name: str, tags: dict[str, str], partition_key: str | None, instance: dg.DagsterInstance,
             asset_selection: list[dg.AssetKey] | None = None,
             ops: Mapping[str, Any] | None = None) -> dg.ExecuteInProcessResult:
    from pipelines.definitions import defs

    job = defs().resolve_job_def(job_name)
    return job.execute_in_process(
        instance=instance, tags={**tags, **process_tags()}, partition_key=partition_key, raise_on_error=False,
        asset_selection=asset_selection,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}, **({"ops": dict(ops)} if ops else {})},
    )


def ops_for_selection(selection: list[dg.AssetKey], ops: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """The part of a run config's `ops` that concerns the selected assets; a name that is no op is refused."""
    unknown = sorted(set(ops) - known)
    if unknown:
        raise RunConfigError(f"run config names ops {unknown} that do not exist; ops are asset keys joined by '__', "
                             f"e.g. {sorted(known)[:4]}")
    selected = {"__".join(key.path) for key in selection}
    return {name: value for name, value in ops.items() if name in selected}


class RunConfigError(SettingsError):
    """A run config given to `crossfade run` does not fit the definitions; the message says what to change."""


def _report(result: dg.ExecuteInProcessResult, label: str) -> bool:
    """Print what each step materialised and each check's verdict; True when the run succeeded."""
    partitions: dict[str, int] = {}
    seconds = _step_seconds(result)
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = event.event_specific_data.materialization
            name = materialization.asset_key.to_user_string()
            if materialization.partition:
                partitions[name] = partitions.get(name, 0) + 1
                if partitions[name] > 1:
                    continue  # one line per asset, however many partitions it wrote
            rows = materialization.metadata.get("dagster/row_count")
            rows_text = f"{rows.value:,} rows" if rows is not None else ""
            _say(f"  materialised {name:32s} {rows_text}{_timing(seconds.get(event.step_key))}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            verdict = "passed" if evaluation.passed else "FAILED"
            publish = evaluation.metadata.get("publish_seconds")
            _say(f"  check {evaluation.check_name:38s} {verdict}"
                 f"{_timing(seconds.get(event.step_key), publish.value if publish is not None else None)}")
            if not evaluation.passed:
                details = evaluation.metadata.get("details")
                if details is not None:
                    print(details.value, flush=True)
        elif event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            _say(f"  step {event.step_key} failed: {error.message.strip() if error else ''}")
    for name, count in partitions.items():
        _say(f"  {name}: {count} partition(s)")
    _say(f"{label}: {'succeeded' if result.success else 'FAILED'} (run {result.run_id[:8]})")
    return result.success


def _step_seconds(result: dg.ExecuteInProcessResult) -> dict[str, float]:
    """Wall seconds of each finished step (an asset's write, a gate's audit and publish), by step key."""
    return {event.step_key: event.event_specific_data.duration_ms / 1000 for event in result.all_events
            if event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE")
            and getattr(event.event_specific_data, "duration_ms", None) is not None}


def _timing(step_s: float | None, publish_s: float | None = None) -> str:
    """' (12.3 s)' or ' (1.2 s, publish 0.05 s)': the step's time, and the part of it its publish took."""
    if step_s is None:
        return ""
    return f"  ({step_s:.1f} s" + (f", publish {publish_s:.2f} s)" if publish_s is not None else ")")


def _maintain(settings: Settings) -> None:
    """Compact the warehouse and expire snapshots past snapshot_retention_days; a failure is reported, not fatal."""
    if not settings.database.parent.joinpath(lake.CATALOG).exists():
        return
    started = time.perf_counter()
    try:
        done = Store(settings.database).maintain(settings.snapshot_retention_days)
    except duckdb.Error as error:
        _say(f"warehouse maintenance failed ({error}); the data is intact, the next run tries again")
        return
    _say(f"warehouse maintenance: {done['files_merged']} tables compacted, {done['snapshots_expired']} snapshots "
         f"older than {settings.snapshot_retention_days} days expired, {done['files_removed']} files removed "
         f"({time.perf_counter() - started:.1f} s)")


def run_nightly(settings: Settings, stages: tuple[str, ...], ops: Mapping[str, Any] | None = None) -> int:
    """Ingest changed arrival partitions before the as-of date, then refresh the selected stages.

    `ops` is the `ops` part of a Dagster run config for the refresh (e.g. fewer training epochs); the config
    of ops outside the selected stages is left out.
    """
    started = time.perf_counter()
    prepare_dagster_home(settings)
    instance = dg.DagsterInstance.get()
    free_slots_of_ended_runs(instance)
    if not landing.event_partitions(settings.landing):
        print(f"crossfade run: no events in {settings.landing / 'events'}; run `crossfade simulate --out "
              f"{settings.landing}` or land files there (see README, Landing zone)", file=sys.stderr)
        return 1
    keys = _partitions_to_ingest(settings, settings.as_of)
    as_of = settings.as_of or dt.date.fromisoformat(landing.event_partitions(settings.landing)[-1]) + dt.timedelta(days=1)
    _say(f"crossfade run: as-of {as_of} (events strictly before it), home {settings.home}")
    ok = True
    if "raw" in stages:
        if keys:
            _say(f"ingest: {len(keys)} new or changed arrival partitions ({keys[0]} .. {keys[-1]})")
            tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1], AS_OF_TAG: as_of.isoformat()}
            ok = _report(_execute("ingest", tags, None, instance), "ingest")
        else:
            _say("ingest: every arrival partition is up to date")
    downstream = [stage for stage in stages if stage != "raw"]
    if ok and downstream:
        from pipelines.definitions import defs

        graph = defs().resolve_asset_graph()
        selection = [key for key in graph.get_all_asset_keys() if key.path[0] in downstream and key != dg.AssetKey(["raw", "events"])]
        partitioned = any(graph.get(key).partitions_def is not None for key in selection)
        partition = (as_of - dt.timedelta(days=1)).isoformat() if partitioned else None
        _say(f"refresh: {', '.join(downstream)} for as-of {as_of}")
        known = {"__".join(key.path) for key in graph.get_all_asset_keys()}
        ops_config = ops_for_selection(selection, ops or {}, known)
        ok = _report(_execute("refresh", {AS_OF_TAG: as_of.isoformat()}, partition, instance, selection, ops_config),
                     "refresh")
    print_summary(settings)
    _maintain(settings)
    _say(f"crossfade run {'finished' if ok else 'stopped by a failed step or gate'} in {time.perf_counter() - started:.1f} s")
    return 0 if ok else 1
