"""Beyond one machine: the k8s deployment files validate, user shards cover everyone once, sharded top-K equals one process."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import yaml

from models.retrieval import candidates_frame, top_k_items
from models.shards import assign_shards, in_shard
from pipelines.candidate_shards import DEFAULT_SHARDS
from tests.reliability.conftest import ROOT

pytestmark = pytest.mark.slow
DEPLOY = ROOT / "deploy" / "k8s"


def _k8s_definitions():
    from pipelines.definitions import build_definitions
    from warehouse.settings import load_settings

    # The deployment's definitions: the same assets, jobs and resources, built with CROSSFADE_EXECUTOR=k8s.
    return build_definitions(load_settings(environ={"CROSSFADE_EXECUTOR": "k8s"}))


def _k8s_nightly_job():
    return _k8s_definitions().resolve_job_def("nightly")


def test_the_run_config_validates_against_the_nightly_job_on_the_k8s_executor() -> None:
    import dagster as dg

    job = _k8s_nightly_job()
    assert job.executor_def.name == "k8s"
    config = yaml.safe_load((DEPLOY / "run_config.yaml").read_text())
    dg.validate_run_config(job, config)  # raises DagsterInvalidConfigError on any wrong key or type


def test_the_candidate_shards_run_config_validates_and_its_steps_write_no_table() -> None:
    import dagster as dg

    job = _k8s_definitions().resolve_job_def("candidate_shards")
    assert job.executor_def.name == "k8s"
    config = yaml.safe_load((DEPLOY / "candidate_shards_run_config.yaml").read_text())
    dg.validate_run_config(job, config)
    steps = sorted(node.name for node in job.graph.nodes)
    assert steps == [f"candidates_shard_{index:02d}_of_16" for index in range(16)] and DEFAULT_SHARDS == 16
    # Shard steps write Parquet, never the warehouse (so they take no slot of its pool), and depend on no other step.
    assert not [node.name for node in job.graph.nodes if node.definition.pool]
    assert not [node.name for node in job.graph.nodes if node.definition.input_defs]
    assert config["execution"]["config"]["max_concurrent"] == DEFAULT_SHARDS


def test_the_staging_run_config_stages_as_many_shards_as_the_job_writes() -> None:
    import dagster as dg

    # The run `dagster asset materialize --select serving/candidates_staging,serving/candidates` launches.
    keys = {dg.AssetKey(["serving", "candidates_staging"]), dg.AssetKey(["serving", "candidates"])}
    job = _k8s_definitions().get_repository_def().get_implicit_job_def_for_assets(list(keys))
    assert job is not None and job.executor_def.name == "k8s"
    run = job.get_subset(asset_selection=keys)
    assert "serving__candidates_staging_serving_candidates_staging_suite" in {node.name for node in run.graph.nodes}
    config = yaml.safe_load((DEPLOY / "candidates_from_shards_run_config.yaml").read_text())
    dg.validate_run_config(run, config)
    assert config["ops"]["serving__candidates_staging"]["config"]["shards"] == DEFAULT_SHARDS
    assert "tag_concurrency_limits" not in config["execution"]["config"]  # writers queue in the instance's pool


def test_the_code_location_picks_its_executor_from_the_environment(tmp_path) -> None:
    probe = ("from pipelines.definitions import defs as load; defs = load(); "
             "print({defs.resolve_job_def(name).executor_def.name for name in ('nightly', 'candidate_shards')})")
    environ = {name: value for name, value in os.environ.items() if not name.startswith("CROSSFADE_")}
    environ["CROSSFADE_HOME"] = str(tmp_path)  # no crossfade.yaml of the developer's
    done = subprocess.run([sys.executable, "-c", probe], env={**environ, "CROSSFADE_EXECUTOR": "k8s"},
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "{'k8s'}", done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-c", probe], env={**environ, "CROSSFADE_EXECUTOR": "kubernetes"},
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode != 0
    assert "executor: must be one of ['multiprocess', 'in_process', 'k8s'] (got 'kubernetes')" in done.stderr


def test_a_misspelt_run_config_is_refused() -> None:
    import dagster as dg

    config = yaml.safe_load((DEPLOY / "run_config.yaml").read_text())
    config["execution"]["config"]["max_concurent"] = config["execution"]["config"].pop("max_concurrent")
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurent"):
        dg.validate_run_config(_k8s_nightly_job(), config)


def test_the_instance_file_configures_a_valid_k8s_run_launcher() -> None:
    import dagster as dg
    from dagster_k8s import K8sRunLauncher

    # Dagster validates config publicly only as run config: an op whose schema is the launcher's.
    @dg.op(config_schema=K8sRunLauncher.config_type())
    def run_launcher() -> None: ...

    @dg.job
    def probe() -> None:
        run_launcher()

    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert (instance["run_launcher"]["module"], instance["run_launcher"]["class"]) == ("dagster_k8s", "K8sRunLauncher")
    config = instance["run_launcher"]["config"]
    dg.validate_run_config(probe, {"ops": {"run_launcher": {"config": config}}})  # raises on a bad key or value
    misspelt = {**config, "job_namespce": config["job_namespace"]}
    with pytest.raises(dg.DagsterInvalidConfigError, match="job_namespce"):  # the probe does refuse
        dg.validate_run_config(probe, {"ops": {"run_launcher": {"config": misspelt}}})
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"] == ["-m", "pipelines.definitions"]


def test_shards_cover_every_user_exactly_once(ingested_world) -> None:
    shards = 4
    with ingested_world.store.read() as con:
        everyone = con.sql("select user_id from features.user_stats order by user_id").pl()["user_id"]
    per_shard = [in_shard(everyone, index, shards) for index in range(shards)]
    flat = pl.concat(per_shard)
    assert flat.sort().equals(everyone) and flat.n_unique() == flat.len()  # all of them, none twice
    assert min(users.len() for users in per_shard) > everyone.len() / shards / 2  # roughly balanced
    for index, users in enumerate(per_shard):  # a shard keeps its users in their order
        assert users.equals(everyone.filter(assign_shards(everyone, shards) == index))
    with pytest.raises(ValueError, match=r"got index 4, shards 4"):
        in_shard(everyone, 4, shards)


def test_shard_assignment_is_pinned() -> None:
    # md5('u1') starts e4d909c290d0fb1c: 16462711477639921542 % 16 == 6. A change here moves users between shards.
    odd = "🎧'; drop table raw.users; --"
    assert assign_shards(pl.Series(["u1", "u2", odd]), 16).to_list() == [6, 14, 6]
    assert in_shard(pl.Series(["u1", "u2", odd]), 6, 16).to_list() == ["u1", odd]
    ids = [f"user-{n}" for n in range(1000)]  # DuckDB in bulk agrees with md5 computed one id at a time
    assert assign_shards(pl.Series(ids), 7).to_list() == [
        int(hashlib.md5(user.encode("utf-8")).hexdigest()[:16], 16) % 7 for user in ids]
    assert assign_shards(pl.Series([f"u{n}" for n in range(5)]), 1).to_list() == [0] * 5
    with pytest.raises(ValueError, match="shards must be at least 1"):
        assign_shards(pl.Series(["u1"]), 0)


def test_union_of_per_shard_top_k_equals_one_process() -> None:
    rng = np.random.default_rng(3)
    users = np.array([f"user-{n:04d}" for n in range(600)])
    items = np.array([f"book-{n:03d}" for n in range(250)])
    user_vectors = rng.standard_normal((len(users), 16)).astype(np.float32)
    item_vectors = rng.standard_normal((len(items), 16)).astype(np.float32)
    item_vectors[10] = item_vectors[11]  # a tie: the lower item index must win in both layouts
    consumed = [np.sort(rng.choice(len(items), size=rng.integers(0, 6), replace=False)) for _ in users]

    def run(rows: np.ndarray) -> pl.DataFrame:
        indptr = np.concatenate([[0], np.cumsum([len(consumed[r]) for r in rows])]).astype(np.int64)
        indices = np.concatenate([consumed[r] for r in rows] or [np.array([], dtype=np.int64)]).astype(np.int64)
        chunks = top_k_items(user_vectors[rows], item_vectors, 20, exclude_indptr=indptr, exclude_indices=indices,
                             chunk_users=64, threads=1)
        return candidates_frame(chunks, users[rows], items)

    single = run(np.arange(len(users))).sort("user_id", "rank")
    shard = assign_shards(pl.Series(users), 8).to_numpy()
    sharded = pl.concat([run(np.flatnonzero(shard == index)) for index in range(8)]).sort("user_id", "rank")
    assert sharded.height == len(users) * 20
    # the same items in the same order; a score may differ in its last float32 bit, since BLAS sums
    # a product in an order that depends on how many users share the matmul
    assert sharded.select("user_id", "item_id", "rank").equals(single.select("user_id", "item_id", "rank"))
    assert np.allclose(sharded["score"].to_numpy(), single["score"].to_numpy(), rtol=1e-5, atol=1e-5)
