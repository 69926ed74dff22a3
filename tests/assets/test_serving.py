"""Nightly candidates on the sample world: the list contract, the gate before publish, readers during a write."""
import dataclasses
import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets import serving
from models.recommender import FeatureFrames
from warehouse import readers
from models import baselines, candidates, two_tower
from models.bundle import ModelBundle
from models.text_features import hashed_text_embeddings
from pipelines import cli
from assets.resources import Crossfade, Warehouse
from tests.conftest import WORLD_AS_OF, IngestedWorld
from warehouse import registry
from warehouse.store import Store, run_sql, sql_text
from tests.conftest import EVAL_TYPES, TYPES
from models.evaluate import PRODUCTION_MODEL, EvaluateConfig
from models.fusion import FusionConfig

K = 100  # settings' default
PARTITION = (WORLD_AS_OF - dt.timedelta(days=1)).isoformat()  # the nightly run for K serves K + 1
SMALL = two_tower.TwoTowerConfig(**TYPES, hidden=(64, 32), epochs=2, use_hgnn=False, seed=0)


@dataclasses.dataclass(frozen=True)
class Served:
    home: Path
    store: Store
    result: dg.ExecuteInProcessResult


def promote_bundle(store: Store, home: Path, version: str, seed: int) -> None:
    """Train a small two-tower on the world's features and make it the promoted model."""
    with store.read() as con:
        frames = FeatureFrames(**readers.feature_tables(con))
    model = two_tower.fit(frames, dataclasses.replace(SMALL, seed=seed),
                          text_embeddings=hashed_text_embeddings(frames.items))
    empty = pl.DataFrame(schema={"item_id": pl.String, "item_type": pl.String, "embedding": pl.List(pl.Float32)})
    folder = ModelBundle(model, empty, {"model_version": version}).save(home / "models" / version)
    with store.write() as con:
        registry.register(con, {"model_version": version, "model_name": "two_tower_hgnn", "as_of": WORLD_AS_OF,
                                "config": {}, "metrics": {}, "checkpoint_dir": str(folder)})
        registry.promote(con, version)


def materialise(home: Path, store: Store, partition: str = PARTITION) -> dg.ExecuteInProcessResult:
    """Staging, its gate, publish and the published suite for one events partition (as-of = partition + 1)."""
    return dg.materialize(
        [serving.serving_candidates_staging, serving.serving_candidates_staging_gate,
         serving.serving_candidates, serving.serving_candidates_gate],
        partition_key=partition, raise_on_error=False,
        resources={"crossfade": Crossfade(home=str(home)), "warehouse": Warehouse(database=str(store.database))},
    )


@pytest.fixture(scope="module")
def served(ingested_world: IngestedWorld, tmp_path_factory: pytest.TempPathFactory) -> Served:
    """The world with a promoted model v1 and its candidates published for the world's as-of date."""
    home = tmp_path_factory.mktemp("served")
    store = ingested_world.copy_to(home)
    promote_bundle(store, home, "v1", seed=0)
    return Served(home, store, materialise(home, store))


def published(store: Store) -> pl.DataFrame:
    with store.read() as con:
        return con.sql("select * from serving.candidates").pl()


def test_every_active_user_gets_k_released_unconsumed_items_in_score_order(served: Served) -> None:
    assert served.result.success
    with served.store.read() as con:
        interactions = con.sql("select user_id, item_id, item_type from features.interactions").pl()
        items = con.sql("select item_id, item_type, release_date from raw.items").pl()
    lists = published(served.store)
    released = items.filter((pl.col("item_type") == "audiobook")
                            & (pl.col("release_date").is_null() | (pl.col("release_date") < WORLD_AS_OF)))
    consumed = interactions.filter(pl.col("item_type") == "audiobook").select("user_id", "item_id").unique()
    eligible = (interactions.select("user_id").unique()
                .join(consumed.join(released, on="item_id").group_by("user_id").len(), on="user_id", how="left")
                .select("user_id", expected=pl.min_horizontal(pl.lit(K), released.height - pl.col("len").fill_null(0))))
    per_user = lists.group_by("user_id").agg(rows=pl.len(), items=pl.col("item_id").n_unique(),
                                             ranks=pl.col("rank").sort(),
                                             ordered=(pl.col("score").sort_by("rank").diff().fill_null(0) <= 0).all())
    checked = eligible.join(per_user, on="user_id", how="left")
    assert checked.filter(pl.col("rows") != pl.col("expected")).is_empty()
    assert (checked["rows"] == checked["items"]).all() and checked["ordered"].all()
    assert all(ranks == list(range(1, len(ranks) + 1)) for ranks in checked["ranks"].to_list())
    assert lists.join(consumed, on=["user_id", "item_id"]).is_empty()
    assert lists.join(released, on="item_id", how="anti").is_empty()
    assert (lists["as_of"] == WORLD_AS_OF).all() and (lists["model_version"] == "v1").all()
    assert not lists["is_fallback"].any()
    assert lists["explanation"].str.starts_with("because you ").all()


def test_users_the_model_knows_nothing_about_get_the_flagged_fallback(served: Served) -> None:
    with served.store.read() as con:
        frames = FeatureFrames(**readers.feature_tables(con))
    text = hashed_text_embeddings(frames.items)
    history = frames.history(candidates.SERVING_PERIODS)
    loner = history.group_by("user_id").len().sort("len", "user_id")["user_id"][0]
    unknown = history.filter(pl.col("user_id") == loner)["item_id"]
    expected = set(history.group_by("user_id").agg(pl.col("item_id").is_in(unknown.implode()).all().alias("all"))
                   .filter("all")["user_id"])
    model = two_tower.fit(frames, SMALL, text_embeddings=text)
    inputs = candidates.ServingInputs(frames, text.filter(~pl.col("item_id").is_in(unknown.implode())),
                                      WORLD_AS_OF, "audiobook", 10)
    lists = pl.concat(list(candidates.generate(inputs, model, "v1")))
    fallback = lists.filter(pl.col("is_fallback"))
    assert set(fallback["user_id"]) == expected and loner in expected
    assert (fallback["model_version"] == candidates.FALLBACK_MODEL).all()
    assert fallback.group_by("user_id").len()["len"].to_list() == [10] * len(expected)
    assert fallback["explanation"].str.starts_with("popular").all()
    assert (fallback.sort("user_id", "rank").group_by("user_id", maintain_order=True)
            .agg((pl.col("score").diff().fill_null(0) <= 0).all())["score"].all())


def test_without_a_promoted_model_every_list_is_the_flagged_popularity_fallback(served: Served) -> None:
    with served.store.read() as con:
        frames = FeatureFrames(**readers.feature_tables(con))
    inputs = candidates.ServingInputs(frames, hashed_text_embeddings(frames.items), WORLD_AS_OF, "audiobook", 5)
    lists = pl.concat(list(candidates.generate(inputs, None, "none")))
    assert lists["is_fallback"].all()
    assert lists["user_id"].n_unique() == frames.history(candidates.SERVING_PERIODS)["user_id"].n_unique()


def test_a_failing_gate_keeps_the_previous_publish(served: Served, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(served.store.root, tmp_path / "warehouse")
    store = Store(tmp_path / "warehouse" / "crossfade.duckdb")
    before = published(store).sort("user_id", "rank")

    def duplicating(*args: object, **kwargs: object) -> Iterator[pl.DataFrame]:
        for n, chunk in enumerate(generate(*args, **kwargs)):
            yield pl.concat([chunk, chunk.head(1)]) if n == 0 else chunk  # a buggy model repeats an item

    generate = candidates.generate
    monkeypatch.setattr(serving, "generate", duplicating)
    result = materialise(served.home, store)
    gate = [e for e in result.get_asset_check_evaluations() if e.check_name == "serving_candidates_staging_suite"]
    assert len(gate) == 1 and not gate[0].passed
    failures = gate[0].metadata["failures"].value
    assert any(f["column"] == "count_duplicates" for f in failures)
    materialised = {e.event_specific_data.materialization.asset_key for e in result.get_asset_materialization_events()}
    assert materialised == {dg.AssetKey(["serving", "candidates_staging"])}  # publishing never ran
    assert published(store).sort("user_id", "rank").equals(before)


def test_a_reader_during_a_write_sees_the_previous_complete_publish(served: Served, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    shutil.copytree(served.store.root, home / "warehouse")
    store = Store(home / "warehouse" / "crossfade.duckdb", lock_timeout_s=5)
    rows = published(store).height
    monkeypatch.setenv("CROSSFADE_HOME", str(home))
    with store.write() as con:  # half way through a publish: the old lists are gone from the working file
        run_sql(con, "serving/candidates_unpublish", {"as_of": WORLD_AS_OF})
        assert con.sql("select count(*) from serving.candidates").fetchone()[0] == 0
        assert published(store).height == rows
        assert cli.main(["sql", "select count(*) as n, min(model_version) as v from serving.candidates",
                         "--format", "csv"]) == 0
        assert capsys.readouterr().out.splitlines()[1] == f"{rows},v1"


def test_a_plan_serves_each_slice_by_its_model_and_every_row_names_it(served: Served) -> None:
    with served.store.read() as con:
        frames = FeatureFrames(**readers.feature_tables(con))
    text = hashed_text_embeddings(frames.items)
    inputs = candidates.ServingInputs(frames, text, WORLD_AS_OF, "audiobook", 10)
    popular = baselines.popularity(frames, inputs.catalogue()["item_id"], "audiobook", candidates.SERVING_PERIODS)
    model = two_tower.fit(frames, SMALL, text_embeddings=text)
    lists = pl.concat(list(candidates.generate(inputs, model, "v1", routed={"cold": ("popularity", popular)})))
    warm = inputs.warm_users().implode()
    cold = lists.filter(~pl.col("user_id").is_in(warm))
    assert cold.height and set(cold["model"]) == {"popularity"} and not cold["is_fallback"].any()
    assert set(lists.filter(pl.col("user_id").is_in(warm) & ~pl.col("is_fallback"))["model"]) == {"two_tower_hgnn"}
    assert lists.group_by("user_id").agg(pl.col("model").n_unique())["model"].max() == 1
    assert lists["user_id"].n_unique() == inputs.active_users().len()
    someone = cold["user_id"].min()
    assert (cold.filter(pl.col("user_id") == someone).sort("rank")["item_id"].to_list()
            == popular.recommend([someone], 10)["item_id"].to_list())
    # both slices routed (the plan serves no one by the two-tower): each slice by its own model, everyone once
    both = pl.concat(list(candidates.generate(inputs, model, "v1", routed={"cold": ("popularity", popular),
                                                                           "warm": ("also_popularity", popular)})))
    assert set(both.filter(~pl.col("user_id").is_in(warm))["model"]) == {"popularity"}
    assert set(both.filter(pl.col("user_id").is_in(warm))["model"]) == {"also_popularity"}
    assert both["user_id"].n_unique() == inputs.active_users().len()


def test_rows_without_a_model_fail_the_gate(served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(served.store.root, tmp_path / "warehouse")
    store = Store(tmp_path / "warehouse" / "crossfade.duckdb")

    def unnamed(*args: object, **kwargs: object) -> Iterator[pl.DataFrame]:
        for n, chunk in enumerate(generate(*args, **kwargs)):
            yield chunk.with_columns(model=pl.lit(None, pl.String)) if n == 0 else chunk

    generate = candidates.generate
    monkeypatch.setattr(serving, "generate", unnamed)
    result = materialise(served.home, store)
    gate = [e for e in result.get_asset_check_evaluations() if e.check_name == "serving_candidates_staging_suite"]
    assert len(gate) == 1 and not gate[0].passed
    assert any(f["column"] == "count_rows_without_model" for f in gate[0].metadata["failures"].value)


def test_serving_never_publishes_lists_whose_gate_did_not_pass(served: Served, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(served.store.root, home / "warehouse")
    store = Store(home / "warehouse" / "crossfade.duckdb")
    before = published(store).sort("user_id", "rank")
    later = WORLD_AS_OF + dt.timedelta(days=1)
    with store.write(serving.STAGING) as con:  # lists staged for tomorrow, by hand or a shard job; no gate yet
        con.execute(sql_text("serving/tables"))
        con.execute("insert into serving.candidates_staging select * replace ($d::date as as_of) "
                    "from serving.candidates_staging where as_of = $today", {"d": later, "today": WORLD_AS_OF})
    result = dg.materialize([serving.serving_candidates], partition_key=WORLD_AS_OF.isoformat(), raise_on_error=False,
                            resources={"crossfade": Crossfade(home=str(home)),
                                       "warehouse": Warehouse(database=str(store.database))})
    assert not result.success
    failure = next(event for event in result.all_events if event.event_type_value == "STEP_FAILURE")
    assert f"no gated lists for {later}" in failure.event_specific_data.user_failure_data.description
    assert published(store).sort("user_id", "rank").equals(before)


def test_explanations_do_not_depend_on_how_many_users_are_explained_at_once(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    with served.store.read() as con:
        frames = FeatureFrames(**readers.feature_tables(con))
    text = hashed_text_embeddings(frames.items)
    inputs = candidates.ServingInputs(frames, text, WORLD_AS_OF, "audiobook", 10)
    model = two_tower.fit(frames, SMALL, text_embeddings=text)
    whole = pl.concat(list(candidates.generate(inputs, model, "v1")))
    monkeypatch.setattr(candidates, "EXPLAIN_FLOATS", 3 * 10 * text["embedding"][0].len())  # 3 users a slice
    sliced = pl.concat(list(candidates.generate(inputs, model, "v1")))
    assert whole["user_id"].n_unique() > 3
    assert whole["explanation"].str.starts_with("because you ").mean() > 0.5
    assert sliced.equals(whole)


def test_a_fusion_slice_reads_the_promoted_two_tower_never_a_refit(served: Served,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with served.store.read() as con:
        frames = FeatureFrames(**readers.feature_tables(con))
    text = hashed_text_embeddings(frames.items)
    inputs = candidates.ServingInputs(frames, text, WORLD_AS_OF, "audiobook", 10)
    model = two_tower.fit(frames, SMALL, text_embeddings=text)

    def refit(*args, **kwargs):
        raise AssertionError("serving refitted the two-tower")

    monkeypatch.setattr(two_tower, "fit", refit)
    config = EvaluateConfig(**EVAL_TYPES, two_tower=SMALL,
                            fusion=FusionConfig(("item_knn", PRODUCTION_MODEL), (1.0, 0.5)))
    plan = {"cold": {"model": "fusion"}, "warm": {"model": PRODUCTION_MODEL}}
    routed = candidates.plan_routes(inputs, plan, config, model)
    lists = pl.concat(list(candidates.generate(inputs, model, "v1", routed=routed)))
    cold = lists.filter(~pl.col("user_id").is_in(inputs.warm_users().implode()) & ~pl.col("is_fallback"))
    assert cold.height and set(cold["model"]) == {"fusion"}
    assert lists["user_id"].n_unique() == inputs.active_users().len()
    assert lists.group_by("user_id").len()["len"].max() == 10
    fused = routed["cold"][1]
    parts = pl.concat([fused.components[name].recommend(cold["user_id"].unique(), 100).select("user_id", "item_id")
                       for name in fused.config.models])
    assert cold.join(parts, on=["user_id", "item_id"], how="anti").height == 0
    with pytest.raises(ValueError, match="no promoted two-tower"):
        candidates.plan_routes(inputs, plan, config, None)
