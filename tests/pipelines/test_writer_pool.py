"""One warehouse writer at a time across runs: the Dagster pool every writing step is in, limited by the instance."""
from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.common import WAREHOUSE_POOL
from pipelines.definitions import defs as load_definitions
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.utils import make_new_run_id
from pipelines.runner import (DAGSTER_YAML, HOST_TAG, PID_TAG, POOL_SETTINGS, ensure_instance_config,
                              free_slots_of_ended_runs)

DEPLOY = Path(__file__).parents[2] / "deploy" / "k8s"

# One `crossfade run` on DAGSTER_HOME: two writing steps in the pool sys.argv[1], executed in process. Both
# processes start together and meet (files in the folder sys.argv[2]); then the first run starts, and the second
# once the first holds a slot of the pool. Dagster claims a slot by checking for a free one and then taking it,
# so two claims within the same few milliseconds can both win (3 of 14 runs started in lockstep overlapped
# here); the store's file lock serialises those. Steps last long enough for two unlimited runs to overlap
# however their processes are scheduled; only Dagster is imported, for speed.
RUN = """
import sys, time
from pathlib import Path
import dagster as dg

pool, ready, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

@dg.asset(pool=pool)
def first_table() -> None:
    time.sleep(1.0)

@dg.asset(pool=pool)
def second_table() -> None:
    time.sleep(1.0)

def wait_for(condition) -> None:
    deadline = time.monotonic() + 60
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)

with dg.DagsterInstance.get() as instance:
    (ready / name).touch()
    wait_for(lambda: len(list(ready.iterdir())) == 2)
    if name == "second":
        wait_for(lambda: instance.event_log_storage.get_concurrency_info(pool).claimed_slots)
    print(dg.materialize([first_table, second_table], instance=instance, raise_on_error=False).run_id)
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DAGSTER_HOME; `dg.DagsterInstance.get()` opens it, as in `crossfade run`."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    return tmp_path / "dagster"


def two_runs_at_once(home: Path) -> list[tuple[float, float]]:
    """Two processes each run two writing steps on DAGSTER_HOME, both runs in flight at once (see RUN); every
    step's (start, end) from the event log."""
    with dg.DagsterInstance.get():
        pass  # the storage exists before the runs, as after any earlier run; two processes creating it race
    ready = home.parent / "ready"
    ready.mkdir()
    runs = [subprocess.Popen([sys.executable, "-c", RUN, WAREHOUSE_POOL, str(ready), name], stdout=subprocess.PIPE,
                             text=True) for name in ("first", "second")]
    run_ids = [run.communicate(timeout=120)[0].split()[-1] for run in runs]
    steps = []
    with dg.DagsterInstance.get() as instance:
        assert [instance.get_run_by_id(run_id).status for run_id in run_ids] == [dg.DagsterRunStatus.SUCCESS] * 2
        for run_id in run_ids:
            times: dict[str, dict[str, float]] = {}
            for record in instance.get_records_for_run(
                    run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}).records:
                entry = record.event_log_entry
                times.setdefault(entry.step_key, {})[entry.dagster_event_type.value] = entry.timestamp
            steps += [(step["STEP_START"], step["STEP_SUCCESS"]) for step in times.values()]
    assert len(steps) == 4
    return steps


def overlapping(steps: list[tuple[float, float]]) -> int:
    """How many pairs of steps ran at the same time."""
    return sum(1 for i, (start, end) in enumerate(steps) for other_start, other_end in steps[i + 1:]
               if start < other_end and other_start < end)


def test_two_runs_write_one_step_at_a_time(home: Path) -> None:
    ensure_instance_config(home)  # as `crossfade run`, `make demo` and `make ui` prepare DAGSTER_HOME
    steps = two_runs_at_once(home)
    assert overlapping(steps) == 0, sorted(steps)
    with dg.DagsterInstance.get() as instance:
        assert instance.event_log_storage.get_concurrency_run_ids() == set()  # every slot freed


def test_without_the_pool_limit_the_runs_write_at_once(home: Path) -> None:
    """The control: a person's own limit stays, and at 10 the two runs' steps overlap."""
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 10\n")
    ensure_instance_config(home)
    assert overlapping(two_runs_at_once(home)) > 0


def test_an_older_crossfade_dagster_yaml_gets_the_pool_and_keeps_its_run_limit(home: Path) -> None:
    path = home / "dagster.yaml"
    path.write_text("run_queue:\n  max_concurrent_runs: 1\ntelemetry:\n  enabled: false\n")
    ensure_instance_config(home)
    assert yaml.safe_load(path.read_text()) == yaml.safe_load(DAGSTER_YAML)
    with dg.DagsterInstance.get() as instance:  # Dagster accepts it
        assert instance.event_log_storage.get_pool_config().default_pool_limit == 1
    written = path.read_text()
    ensure_instance_config(home)
    assert path.read_text() == written


@dg.asset(pool=WAREHOUSE_POOL)
def table() -> None:
    pass


def test_a_slot_still_held_by_an_ended_run_is_freed(home: Path) -> None:
    ensure_instance_config(home)
    with dg.DagsterInstance.get() as instance:
        run_id = dg.materialize([table], instance=instance).run_id
        storage = instance.event_log_storage
        assert storage.claim_concurrency_slot(WAREHOUSE_POOL, run_id, "table").is_claimed  # as if never freed
        free_slots_of_ended_runs(instance)
        assert storage.get_concurrency_run_ids() == set()


def test_a_slot_held_by_a_run_whose_process_is_gone_is_freed_and_the_run_marked_failed(home: Path) -> None:
    ensure_instance_config(home)
    gone = subprocess.Popen(["true"])
    gone.wait()
    with dg.DagsterInstance.get() as instance:
        dg.materialize([table], instance=instance)  # the pool gets its slots
        storage = instance.event_log_storage
        runs = {}
        for name, pid in (("killed", gone.pid), ("alive", os.getpid()), ("elsewhere", gone.pid)):
            tags = {HOST_TAG: socket.gethostname() if name != "elsewhere" else "another-host", PID_TAG: str(pid)}
            run = instance.add_run(DagsterRun(job_name=name, run_id=make_new_run_id(), tags=tags,
                                              status=DagsterRunStatus.STARTED))
            assert storage.claim_concurrency_slot(WAREHOUSE_POOL, run.run_id, name).is_claimed or name != "killed"
            runs[name] = run.run_id
        free_slots_of_ended_runs(instance)
        assert instance.get_run_by_id(runs["killed"]).status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(runs["alive"]).status == DagsterRunStatus.STARTED  # still running: kept
        assert instance.get_run_by_id(runs["elsewhere"]).status == DagsterRunStatus.STARTED  # can't tell: kept
        assert storage.get_concurrency_run_ids() == {runs["alive"], runs["elsewhere"]}


definitions = load_definitions()


def test_every_duckdb_asset_writes_in_the_warehouse_pool() -> None:
    kinds = {spec.key.to_user_string(): (spec.kinds, assets.op.pool) for assets in definitions.assets
             for spec in assets.specs}
    assert all("duckdb" in asset_kinds for asset_kinds, _ in kinds.values())  # every asset is a warehouse table
    assert {name: pool for name, (_, pool) in kinds.items() if pool != WAREHOUSE_POOL} == {}


def test_a_check_is_in_the_warehouse_pool_exactly_when_it_writes() -> None:
    """The promotion gate writes its verdict into models.registry; the other checks read the published snapshot."""
    pools = {checks.op.name: (checks.op.pool, "warehouse.write()" in inspect.getsource(checks.op.compute_fn.decorated_fn))
             for checks in definitions.asset_checks}
    assert {name: pool for name, (pool, writes) in pools.items() if (pool == WAREHOUSE_POOL) != writes} == {}
    assert [name for name, (_, writes) in pools.items() if writes] == ["models__two_tower_models_two_tower_promotion_gate"]


def test_candidate_shard_steps_stay_out_of_the_pool() -> None:
    """Shard steps write Parquet to the exchange, never the DuckDB file, so they run side by side."""
    job = definitions.resolve_job_def("candidate_shards")
    assert {node.definition.pool for node in job.graph.nodes} == {None}



def test_the_cluster_instance_limits_the_pool_as_the_local_one_does() -> None:
    """deploy/k8s/dagster.yaml passes Dagster's instance checks, which refuse run limits set both under the run
    coordinator and under concurrency; values.yaml has the Helm chart write the same limits."""
    from dagster._core.instance.config import dagster_instance_config  # the one validator of a whole dagster.yaml

    instance, _ = dagster_instance_config(str(DEPLOY))
    assert instance["concurrency"]["pools"] == POOL_SETTINGS
    chart = yaml.safe_load((DEPLOY / "values.yaml").read_text())["concurrency"]
    assert chart["enabled"] and chart["pools"] == {"defaultLimit": 1, "granularity": "op"}
    assert chart["runs"]["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    assert chart["runs"]["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"]
