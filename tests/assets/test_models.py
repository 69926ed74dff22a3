"""Model stage assets on the small sample world: vectors, a registered and promoted bundle, offline metrics, the gate."""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from assets import eval as evaluation
from assets import models
from models.bundle import ModelBundle
from models import protocol
from models.evaluate import LLM_ABLATION, MODELS
from assets.resources import Crossfade, Warehouse
from warehouse import ingest, landing, registry
from warehouse.features import FEATURE_TABLES, FeatureParams, build_table
from warehouse.store import Store
from worlds.sample import WorldConfig, simulate

pytestmark = pytest.mark.slow  # simulates a world and trains the HGNN and two-tower models: minutes on 2 cores
# Larger than the shared 300-user world: with 16 training days there Popularity is hard to beat for anyone.
WORLD = WorldConfig(users=600, days=60, seed=7, end_date=dt.date(2026, 11, 1), dirty_rate=0.0)
AS_OF = WORLD.end_date + dt.timedelta(days=1)
# 12 two-tower epochs: at 8, seed 0 tied Popularity on this world's 107 cold users (cold HR@10 0.579 both)
# while seeds 1-4 led by 0.04-0.07; at 12, seed 0 leads by 0.075 (0.654).
RUN_CONFIG = {"ops": {"models__hgnn_item_embeddings": {"config": {"max_epochs": 8, "patience": 3}},
                      "models__two_tower": {"config": {"epochs": 12}}}}
STAGE = [models.models_hgnn_item_embeddings, models.models_hgnn_item_embeddings_gate, models.models_two_tower,
         models.models_two_tower_promotion_gate, models.models_registry, models.models_registry_gate,
         evaluation.eval_offline_metrics, evaluation.eval_offline_metrics_gate]


@dataclass(frozen=True)
class Stage:
    home: Path
    store: Store
    result: dg.ExecuteInProcessResult


def materialise(selection: list, config: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize(selection, resources={"crossfade": Crossfade(), "warehouse": Warehouse()},
                          run_config=config, raise_on_error=False)


def featurised_world(home: Path) -> Store:
    """The world simulated, ingested and featurised under `home`, as `crossfade run --select raw features` would."""
    simulate(WORLD, home / "landing")
    store = Store(home / "warehouse" / "crossfade.duckdb")
    with store.write() as con:
        ingest.ingest_items(con, home / "landing", ("music", "podcast", "audiobook"))
        ingest.ingest_users(con, home / "landing")
        for key in landing.event_partitions(home / "landing"):
            ingest.ingest_events(con, home / "landing", key)
        for name in FEATURE_TABLES:
            build_table(con, name, FeatureParams(as_of=AS_OF))
    return store


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    home = tmp_path_factory.mktemp("models_home")
    store = featurised_world(home)
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("CROSSFADE_"):
                patch.delenv(name)
        patch.setenv("CROSSFADE_HOME", str(home))
        yield Stage(home, store, materialise(STAGE, RUN_CONFIG))


def checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_the_whole_stage_materialises_and_every_gate_passes(stage) -> None:
    assert stage.result.success
    assert checks(stage.result) == {
        "models_hgnn_item_embeddings_suite": True, "models_two_tower_promotion_gate": True,
        "models_registry_suite": True, "eval_offline_metrics_suite": True}


def test_every_graph_and_target_item_gets_one_vector(stage) -> None:
    with stage.store.read() as con:
        items = con.execute("select count(*) from raw.items where item_type in ('podcast', 'audiobook')").fetchone()[0]
        vectors = con.execute("select count(distinct item_id), count(distinct model_version) "
                              "from models.hgnn_item_embeddings").fetchone()
    assert vectors == (items, 1)


def test_the_registered_bundle_is_promoted_and_loads(stage) -> None:
    with stage.store.read() as con:
        row = registry.promoted(con)
        assert [r["model_version"] for r in registry.candidates(con)] == []
    assert row["model_name"] == "two_tower_hgnn"
    assert row["as_of"] == AS_OF
    assert row["metrics"]["training"]["losses_finite"]
    assert {"all", "warm", "cold", "long_tail"} <= set(row["metrics"])
    bundle = ModelBundle.load(row["checkpoint_dir"])
    assert bundle.manifest["model_version"] == row["model_version"]
    assert Path(row["checkpoint_dir"]).parent == stage.home / "models"


def test_offline_metrics_hold_every_model_and_the_judge_lists(stage) -> None:
    with stage.store.read() as con:
        metrics = con.sql("select * from eval.offline_metrics").pl()
        lists = con.sql("select model, user_id, count(*) as n, max(rank) as last from eval.offline_lists "
                        "group by all").pl()
        version = registry.promoted(con)["model_version"]
    holdout = metrics.filter(pl.col("split") == "holdout")
    assert set(holdout["model"]) == {*MODELS, LLM_ABLATION, protocol.SERVED}
    assert set(metrics.filter(pl.col("split") == "valid")["model"]) == {*protocol.SERVABLE, protocol.SERVED}
    assert set(metrics["model_version"]) == {version}
    assert set(lists["model"]) <= {*MODELS, LLM_ABLATION, protocol.SERVED}
    assert lists["n"].max() == 10 and lists["last"].max() == 10


def test_two_tower_hgnn_beats_popularity_on_cold_users(stage) -> None:
    with stage.store.read() as con:
        hr = dict(con.execute("select model, value from eval.offline_metrics where slice = 'cold' "
                              "and metric = 'hr@10' and split = 'holdout'").fetchall())
    assert hr["two_tower_hgnn"] > hr["popularity"]


def test_the_plan_serves_per_slice_the_model_that_validated_best_or_the_fusion_in_2t_hgnns_band(stage) -> None:
    with stage.store.read() as con:
        row = registry.promoted(con)
        valid = con.sql("select model, slice, value, std_error from eval.offline_metrics where split = 'valid' "
                        "and metric = 'hr@10' and slice in ('cold', 'warm')").pl()
    plan = row["metrics"]["plan"]
    for slice_name in ("cold", "warm"):
        candidates = valid.filter((pl.col("slice") == slice_name) & pl.col("model").is_in(list(protocol.SERVABLE)))
        best = candidates.sort("value", descending=True).row(0, named=True)
        chosen = best
        if plan[slice_name]["model"] == protocol.FUSION and best["model"] != protocol.FUSION:
            # the fusion stood in for 2T-HGNN: within one standard error of it and not under any baseline
            chosen = candidates.filter(pl.col("model") == protocol.FUSION).row(0, named=True)
            assert not protocol.is_baseline(best["model"])
            assert best["value"] - chosen["value"] <= max(best["std_error"], chosen["std_error"]) + 1e-9
            baselines = [value for model, value in candidates.select("model", "value").iter_rows()
                         if protocol.is_baseline(model)]
            assert chosen["value"] >= max(baselines)
        assert plan[slice_name]["value"] == pytest.approx(chosen["value"])
        served = valid.filter((pl.col("slice") == slice_name) & (pl.col("model") == protocol.SERVED))["value"].item()
        assert served == pytest.approx(chosen["value"])  # the plan's own lists score what the plan promised
    assert set(row["metrics"]["tuned"]) == set(protocol.TUNED)
    # the served two-tower's history factors are EASE with the setting validation chose for EASE
    tuned_ease = row["metrics"]["tuned"]["ease"]
    refit = row["config"]["two_tower"]
    assert refit["history_factor_regularization"] == tuned_ease["regularization"]
    assert refit["history_factor_max_items"] == tuned_ease["max_items"]
    # refitted on train + valid: its data ends where the holdout starts
    assert row["train_end"] == dt.datetime.combine(AS_OF - dt.timedelta(days=14), dt.time())


def test_the_gate_refuses_a_model_worse_than_the_promoted_one(stage) -> None:
    with stage.store.read() as con:
        real = registry.promoted(con)
    strong = real | {"model_version": "strong", "metrics": {"cold": {"hr@10": 0.99}}, "created_at": None,
                     "status": "candidate", "reason": None, "promoted_at": None}
    with stage.store.write() as con:
        con.execute("update models.registry set status = 'retired' where status = 'promoted'")
        registry.register(con, strong)
        registry.promote(con, "strong")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CROSSFADE_HOME", str(stage.home))
        patch.setenv("CROSSFADE_PROMOTION_TOLERANCE", "0.05")
        result = materialise([models.models_two_tower, models.models_two_tower_promotion_gate, models.models_registry],
                             {"ops": {"models__two_tower": {"config": {"epochs": 1}}}})
    assert checks(result) == {"models_two_tower_promotion_gate": False}
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.metadata["tolerance"].value == 0.05  # the setting, not a constant
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [dg.AssetKey(["models", "two_tower"])]
    with stage.store.read() as con:
        newest = registry.latest(con)
        assert registry.promoted(con)["model_version"] == "strong"
    assert newest["status"] == "rejected"
    assert "below promoted strong" in newest["reason"]


def test_a_later_night_within_retune_days_scores_the_validated_settings_without_their_grids(stage) -> None:
    with stage.store.read() as con:
        before = registry.latest_tuned(con)
    assert before["metrics"]["tuned_at"] == AS_OF.isoformat()  # the first night ran the grids
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CROSSFADE_HOME", str(stage.home))
        result = materialise([models.models_two_tower, models.models_two_tower_promotion_gate, models.models_registry],
                             {"ops": {"models__two_tower": {"config": {"epochs": 1}}}})
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key == dg.AssetKey(["models", "two_tower"])]
    tuning = event.materialization.metadata["tuning"].value
    assert tuning.startswith(f"settings validated at {AS_OF} (0 days before tonight; retune_days 7)")
    with stage.store.read() as con:
        row = registry.latest(con)
    assert row["metrics"]["tuning"] == tuning and row["metrics"]["tuned_at"] == AS_OF.isoformat()
    assert row["metrics"]["tuned"] == before["metrics"]["tuned"]
    grid = pl.DataFrame(row["metrics"]["grid"])
    assert sorted(grid["model"].to_list()) == sorted(set(pl.DataFrame(before["metrics"]["grid"])["model"]))

    def figures(registered: dict) -> pl.DataFrame:  # the models no seed moves: same settings, same data
        rows = pl.DataFrame(registered["metrics"]["validation_rows"])
        return rows.filter(pl.col("model").is_in(["popularity", "ease", "item_knn"])).sort("model", "slice", "metric")
    assert_frame_equal(figures(row), figures(before), check_exact=False, rel_tol=1e-9)
