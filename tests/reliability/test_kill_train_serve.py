"""SIGKILL mid-training and mid-candidate-writing, then a retry: nothing half-registered, lost or doubled."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import torch

from assets import models, serving
from models import two_tower
from models.bundle import ModelBundle
from models.candidates import SERVING_PERIODS
from models.recommender import FeatureFrames
from assets.resources import Crossfade, Warehouse
from tests.assets.test_serving import promote_bundle
from tests.conftest import WORLD_AS_OF, with_gates
from tests.reliability.conftest import ROOT, published_state_kept, sigkill, wait_for
from warehouse import lake, readers, registry
from warehouse.features import FEATURE_TABLES, FeatureParams, build_table
from warehouse.store import Store, scalar, table_exists

pytestmark = pytest.mark.slow
# With their gates: the HGNN vectors reach readers when their suite passes, and models_registry promotes only
# a candidate its promotion gate published (the plan serves the best validated model, so the gate passes here).
TRAINING = with_gates([models.models_hgnn_item_embeddings, models.models_two_tower, models.models_registry])
TRAIN_CONFIG = {"ops": {"models__hgnn_item_embeddings": {"config": {"max_epochs": 2, "patience": 2}},
                        "models__two_tower": {"config": {"epochs": 2}}}}
SERVING = [serving.serving_candidates_staging, serving.serving_candidates_staging_gate, serving.serving_candidates,
           serving.serving_candidates_gate]
# several chunks and inserts
SERVE_CONFIG = {"ops": {"serving__candidates_staging": {"config": {"chunk_users": 64, "insert_rows": 1000}}}}
TONIGHT = (WORLD_AS_OF - dt.timedelta(days=1)).isoformat()  # the events partition whose run serves WORLD_AS_OF
YESTERDAY = (WORLD_AS_OF - dt.timedelta(days=2)).isoformat()


@dataclasses.dataclass(frozen=True)
class TinyTwoTower(two_tower.TwoTowerConfig):
    hidden: tuple[int, ...] = (64, 32)  # the production width trains twice as long and tests nothing more


def resources(home: Path) -> dict[str, dg.ConfigurableResource]:
    return {"crossfade": Crossfade(home=str(home)), "warehouse": Warehouse(database=str(database(home)))}


def database(home: Path) -> Path:
    return home / "warehouse" / "crossfade.duckdb"


def train(home: Path) -> dg.ExecuteInProcessResult:
    """HGNN vectors, the two-tower bundle registered, then promoted: the models stage of `crossfade run`."""
    return dg.materialize(TRAINING, run_config=TRAIN_CONFIG, resources=resources(home), raise_on_error=False)


def serve(home: Path, partition: str = TONIGHT) -> dg.ExecuteInProcessResult:
    """Staging, its gate (publishing the staged lists), the copy to the served table and its gate: the serving
    stage of `crossfade run`."""
    return dg.materialize(SERVING, run_config=SERVE_CONFIG, partition_key=partition, resources=resources(home),
                          raise_on_error=False)


# One of the steps above in a process that pauses after the n-th pass through a named point, to be killed
# there: after an HGNN epoch, after the two-tower's second label draw (its first epoch done), after the
# bundle is on disk, after a SQL file of the serving stage, or as a passing gate is about to publish its
# stage ("publish/<stage>": the stage's writes are committed, readers do not see them yet).
KILLABLE_RUN = """
import sys
from pathlib import Path

from assets import serving
from models import hgnn, two_tower
from models.bundle import ModelBundle
from tests.reliability import pause_points
from tests.reliability import test_kill_train_serve as steps
from warehouse.store import Store

home, step, pause_at, occurrence = sys.argv[1:5]
pause_points.arm(pause_at, int(occurrence))
after = pause_points.after
train_hgnn = hgnn.train
hgnn.train = lambda *args, **kwargs: train_hgnn(*args, **kwargs, on_epoch=lambda row: pause_points.pause("hgnn/epoch"))
two_tower.split_labels = after(two_tower.split_labels, "two_tower/labels")
ModelBundle.save = after(ModelBundle.save, "bundle/saved")
serving.run_sql = pause_points.after_sql(serving.run_sql)


def publish(store, stage, publish=Store.publish):
    pause_points.pause(f"publish/{stage}")
    return publish(store, stage)


Store.publish = publish
two_tower.TwoTowerConfig = steps.TinyTwoTower
print("running", flush=True)
result = steps.train(Path(home)) if step == "train" else steps.serve(Path(home))
print("done" if result.success else "failed", flush=True)
"""


def start_run(home: Path, step: str, pause_at: str, occurrence: int = 1) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CROSSFADE_")}
    return subprocess.Popen([sys.executable, "-c", KILLABLE_RUN, str(home), step, pause_at, str(occurrence)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def digest(con: duckdb.DuckDBPyConnection, query: str) -> tuple[int, str]:
    """Row count and an order-free digest of a query's rows."""
    return con.execute(f"""
        with t as ({query})
        select count(*), md5(coalesce(string_agg(cast(t as varchar), chr(10) order by cast(t as varchar)), '')) from t
    """).fetchall()[0]


def newest_version(store: Store) -> int:
    """The newest snapshot of the lake, published or not: it moves with every committed write."""
    with store.audit() as con:
        return lake.latest_version(con, scalar(con, "select current_database()"))


def folders(home: Path) -> set[str]:
    return {path.name for path in (home / "models").glob("*")} if (home / "models").exists() else set()


# --- killed mid-training ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Trained:
    embeddings: tuple[int, str]  # (item_id, item_type, embedding): model_version differs by run id
    row: dict
    weights: dict[str, torch.Tensor]


def trained(home: Path) -> Trained:
    """What a finished training run left: its vectors, its one registry row, its two-tower weights."""
    with Store(database(home)).read() as con:
        count = con.execute("select count(*) from models.registry").fetchall()[0][0]
        row = registry.latest(con)
        embeddings = digest(con, "select item_id, item_type, embedding from models.hgnn_item_embeddings")
        hgnn_versions = con.execute("select distinct model_version from models.hgnn_item_embeddings").fetchall()
    assert count == 1 and row["status"] == "promoted", (count, row["model_version"], row["status"])
    assert hgnn_versions == [(row["config"]["hgnn_version"],)]
    bundle = ModelBundle.load(row["checkpoint_dir"])
    assert bundle.manifest["model_version"] == row["model_version"]
    return Trained(embeddings, row, bundle.two_tower.net.state_dict())


def assert_same_model(retried: Trained, clean: Trained) -> None:
    """Training is bit-for-bit repeatable here (seeded, HGNN on one thread): vectors, weights and losses match.

    The offline metrics are summed by polars in parallel, so they agree to rounding only.
    """
    assert retried.embeddings == clean.embeddings
    assert retried.weights.keys() == clean.weights.keys()
    assert all(torch.equal(retried.weights[name], clean.weights[name]) for name in clean.weights)
    for key in ("model_name", "as_of", "train_start", "train_end", "status"):
        assert retried.row[key] == clean.row[key]
    assert retried.row["metrics"]["training"]["losses"] == clean.row["metrics"]["training"]["losses"]
    for name in ("all", "warm", "cold", "long_tail"):
        assert retried.row["metrics"][name] == pytest.approx(clean.row["metrics"][name], rel=1e-9)


@pytest.fixture(scope="module")
def clean_training(ingested_world, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    home = tmp_path_factory.mktemp("clean_training")
    ingested_world.copy_to(home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(two_tower, "TwoTowerConfig", TinyTwoTower)
        assert train(home).success
    return trained(home)


@pytest.mark.parametrize(("pause_at", "occurrence", "left_on_disk"), [
    ("hgnn/epoch", 1, {"hgnn": 0, "2t-hgnn": 0}),  # nothing written yet
    ("two_tower/labels", 2, {"hgnn": 1, "2t-hgnn": 0}),  # HGNN vectors gated and published, two-tower past epoch 1
    ("bundle/saved", 1, {"hgnn": 1, "2t-hgnn": 1}),  # a complete bundle on disk, not registered
])
def test_killed_mid_training_the_retry_registers_one_version_equal_to_a_clean_run(
    ingested_world, clean_training: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    pause_at: str, occurrence: int, left_on_disk: dict[str, int],
) -> None:
    home = tmp_path / "home"
    store = ingested_world.copy_to(home)
    newest = newest_version(store)
    # Killed before its first write, the run leaves the published state as it was, byte for byte, and commits nothing.
    with published_state_kept(store) if pause_at == "hgnn/epoch" else contextlib.nullcontext():
        trainer = start_run(home, "train", pause_at, occurrence)
        wait_for(trainer, "paused")
        sigkill(trainer)
    if pause_at == "hgnn/epoch":
        assert newest_version(store) == newest
    # One connection at a time: the lake connections of a process share one DuckDB, and table_exists sees them all.
    with store.read() as con:
        assert registry.latest(con) is None  # nothing half-registered: not for readers ...
    with store.audit() as con:
        assert registry.latest(con) is None  # ... nor in the newest state the retry starts from
        assert table_exists(con, "models.hgnn_item_embeddings") == bool(left_on_disk["hgnn"])
    assert store.pending_stages() == {}  # what was written passed its gate: the vectors are what readers see
    assert (store.published_version("models.hgnn_item_embeddings") is not None) == bool(left_on_disk["hgnn"])
    stray = folders(home)  # named <prefix>-<as-of>-<run id>: hgnn-2026... and 2t-hgnn-2026...
    assert {prefix: sum(name.startswith(f"{prefix}-2") for name in stray) for prefix in left_on_disk} == left_on_disk
    if left_on_disk["2t-hgnn"]:
        ModelBundle.load(home / "models" / next(n for n in stray if n.startswith("2t-")))  # complete, yet no model

    monkeypatch.setattr(two_tower, "TwoTowerConfig", TinyTwoTower)
    assert train(home).success
    retried = trained(home)
    assert Path(retried.row["checkpoint_dir"]).name not in stray  # the leftover bundle was not taken as the model
    assert len(folders(home) - stray) == 2  # the retry's own HGNN checkpoint and bundle
    with store.read() as con:
        assert serving.promoted_model(con, Crossfade(home=str(home)).settings()).model_version == retried.row["model_version"]
    assert_same_model(retried, clean_training)


def test_killed_after_registering_before_publish_the_retry_supersedes_that_version(
    ingested_world, clean_training: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed as the promotion gate, passed, was about to publish the registration: the row is committed in the
    newest state only, pending for the models.two_tower stage.

    Readers never see it; the retry's gate publishes it with its own run's row, and models_registry rejects it
    as superseded (a complete bundle whose run stopped before a verdict), so one row more than a clean run.
    """
    home = tmp_path / "home"
    store = ingested_world.copy_to(home)
    trainer = start_run(home, "train", "publish/models.two_tower", 1)
    wait_for(trainer, "paused")
    with published_state_kept(store):
        sigkill(trainer)
    assert "models.registry" in store.pending("models.two_tower")
    assert store.published_version("models.registry") is None
    with store.read() as con:
        assert registry.latest(con) is None
    with store.audit() as con:
        killed = registry.latest(con)
    assert killed["status"] == "candidate"
    ModelBundle.load(killed["checkpoint_dir"])  # the registered bundle is complete

    monkeypatch.setattr(two_tower, "TwoTowerConfig", TinyTwoTower)
    assert train(home).success
    with store.read() as con:
        count = con.execute("select count(*) from models.registry").fetchall()[0][0]
        newest, superseded = registry.promoted(con), registry.get(con, killed["model_version"])
    assert count == 2 and superseded["status"] == "rejected"  # the retry's row and the killed run's
    assert superseded["reason"] == f"superseded by {newest['model_version']} before a verdict"
    bundle = ModelBundle.load(newest["checkpoint_dir"])
    weights = bundle.two_tower.net.state_dict()
    assert all(torch.equal(weights[name], clean_training.weights[name]) for name in clean_training.weights)


# --- killed mid-candidate-writing ------------------------------------------------------------------

def candidates_digest(store: Store) -> tuple[tuple[int, str], tuple[int, str]]:
    """Published lists, all dates, and those of tonight's as-of date."""
    with store.read() as con:
        return (digest(con, "select * from serving.candidates"),
                digest(con, f"select * from serving.candidates where as_of = '{WORLD_AS_OF}'"))


@pytest.fixture(scope="module")
def yesterday(ingested_world, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose published lists are last night's (as-of WORLD_AS_OF - 1) and whose features are tonight's."""
    home = tmp_path_factory.mktemp("yesterday")
    store = ingested_world.copy_to(home)
    with store.write() as con:
        for name in FEATURE_TABLES:
            build_table(con, name, FeatureParams(as_of=WORLD_AS_OF - dt.timedelta(days=1)))
    promote_bundle(store, home, "v1", seed=0)
    assert serve(home, YESTERDAY).success
    with store.write() as con:  # tonight's ingest and features ran; the serving stage comes next
        for name in FEATURE_TABLES:
            build_table(con, name, FeatureParams(as_of=WORLD_AS_OF))
    return home


@pytest.fixture(scope="module")
def clean_serving(yesterday: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[int, str], tuple[int, str]]:
    home = tmp_path_factory.mktemp("clean_serving")
    store = Store(database(home))
    copy_home(yesterday, home)
    assert serve(home).success
    return candidates_digest(store)


def copy_home(source: Path, home: Path) -> Store:
    shutil.copytree(source, home, dirs_exist_ok=True)
    return Store(database(home))


def tonight_in_newest_state(store: Store) -> tuple[int, int]:
    """(staged, served) rows of tonight's date in the newest state, published or not: what the retry starts from."""
    with store.audit() as con:
        return con.execute(f"""
            select (select count(*) from serving.candidates_staging where as_of = '{WORLD_AS_OF}'),
                   (select count(*) from serving.candidates where as_of = '{WORLD_AS_OF}')
        """).fetchall()[0]


@pytest.mark.parametrize(("pause_at", "occurrence", "left"), [
    ("serving/candidates_staging_insert", 1, "part staged"),  # the first rows committed, the rest not yet made
    ("serving/candidates_unpublish", 1, "all staged"),  # staging gated; in the copy's transaction, old lists deleted
    ("publish/serving.candidates", 1, "all served"),  # lists committed, their gate passed, not yet published
])
def test_killed_mid_candidate_writing_readers_keep_last_night_and_the_retry_equals_a_clean_run(
    yesterday: Path, clean_serving, tmp_path: Path, pause_at: str, occurrence: int, left: str,
) -> None:
    home = tmp_path / "home"
    store = copy_home(yesterday, home)
    last_night = candidates_digest(store)
    assert last_night[0][0] > 0 and last_night[1][0] == 0  # last night's lists, none yet for tonight
    writer = start_run(home, "serve", pause_at, occurrence)
    wait_for(writer, "paused")
    assert candidates_digest(store) == last_night
    sigkill(writer)
    assert candidates_digest(store) == last_night
    tonight = clean_serving[1][0]
    staged, served = tonight_in_newest_state(store)
    assert {"part staged": 0 < staged < tonight and served == 0, "all staged": (staged, served) == (tonight, 0),
            "all served": (staged, served) == (tonight, tonight)}[left], (staged, served, tonight)

    assert serve(home).success
    assert candidates_digest(store) == clean_serving  # same rows, so nothing lost or doubled
    with store.read() as con:
        active = set(FeatureFrames(**readers.feature_tables(con)).history(SERVING_PERIODS)["user_id"].cast(pl.String))
        rows, pairs, ranks = con.execute(f"""
            select count(*), count(distinct (user_id, item_id)), count(distinct (user_id, rank))
            from serving.candidates where as_of = '{WORLD_AS_OF}'
        """).fetchall()[0]
        served = {row[0] for row in con.execute(
            f"select distinct user_id from serving.candidates where as_of = '{WORLD_AS_OF}'").fetchall()}
    assert rows == pairs == ranks == tonight  # no item and no rank twice in a user's list
    assert served == active  # every active user has a list
