"""Offline evaluation of every model on one split of the planted world."""
from dataclasses import replace

import polars as pl
import pytest

from models.evaluate import MODELS, EvaluateConfig, evaluate, evaluation_set, scored_targets, plot_metrics
from models.two_tower import TwoTowerConfig
from tests.conftest import EVAL_TYPES, TYPES

CONFIG = EvaluateConfig(**EVAL_TYPES, k=50, two_tower=TwoTowerConfig(**TYPES, epochs=5, batch_size=128))
BASE = EvaluateConfig(**EVAL_TYPES, two_tower=CONFIG.two_tower)  # default K


@pytest.fixture(scope="module")
def results(world) -> pl.DataFrame:
    return evaluate(world.frames, world.hgnn, world.text, world.profile, CONFIG)


def value(results: pl.DataFrame, model: str, slice_name: str, metric: str) -> float:
    row = results.filter((pl.col("model") == model) & (pl.col("slice") == slice_name) & (pl.col("metric") == metric))
    return row["value"].item()


def test_every_model_reports_every_slice(results) -> None:
    assert results.columns == ["model", "slice", "metric", "value", "std_error", "users"]
    per_model = results.group_by("model").agg(pl.col("slice").n_unique(), pl.col("metric").n_unique())
    assert sorted(per_model["model"]) == sorted(MODELS)
    assert set(per_model["slice"]) == {4}
    assert set(per_model["metric"]) == {10}  # hr@10, mrr, coverage, served, recall and ndcg at 10, 20, 50


def test_two_tower_hgnn_beats_popularity_on_cold_users(results) -> None:
    assert value(results, "two_tower_hgnn", "cold", "hr@10") > value(results, "popularity", "cold", "hr@10") + 0.3


def test_warm_only_baselines_serve_no_cold_user(results) -> None:
    for model in ("llm_knn", "hgnn"):
        assert value(results, model, "cold", "served") == 0.0
        assert value(results, model, "warm", "served") == 1.0


def test_item_knn_and_ease_serve_cold_users_through_their_other_types(results) -> None:
    hr = results.filter(pl.col("metric") == "hr@10").pivot("slice", index="model", values="value").sort("model")
    print(hr)  # HR@10 of every model on the planted world, per slice
    for model in ("item_knn", "ease"):
        assert value(results, model, "cold", "served") == 1.0
        assert value(results, model, "cold", "hr@10") > value(results, "popularity", "cold", "hr@10")


def test_slices_hold_the_planted_users(results) -> None:
    rows = results.filter((pl.col("model") == "popularity") & (pl.col("metric") == "hr@10"))
    users = dict(zip(rows["slice"], rows["users"]))
    assert (users["all"], users["warm"], users["cold"]) == (800, 400, 400)


def test_targets_are_new_to_the_user_and_released_before_the_cut(world) -> None:
    catalogue = world.frames.released("audiobook", world.frames.cut())
    targets = scored_targets(world.frames, "audiobook", catalogue)
    train = world.frames.history(["train"]).select("user_id", "item_id")
    assert targets.join(train, on=["user_id", "item_id"], how="semi").height == 0
    assert not targets["item_id"].str.contains("_n").any()
    assert targets.height == 2 * 800  # two new released books per user in the holdout


def test_max_users_scores_a_seeded_sample_with_all_its_targets(world) -> None:
    whole = evaluation_set(world.frames, replace(BASE, max_users=0))
    sample = evaluation_set(world.frames, replace(BASE, max_users=100, seed=3))
    assert (whole.users.len(), whole.population, sample.users.len(), sample.population) == (800, 800, 100, 800)
    assert sample.users.is_sorted() and sample.users.is_in(whole.users).all()
    assert set(sample.targets["user_id"]) == set(sample.users)
    mine = whole.targets.join(sample.users.to_frame(), on="user_id", how="semi")
    assert sample.targets.sort("user_id", "item_id").equals(mine.sort("user_id", "item_id"))  # none lost
    assert evaluation_set(world.frames, replace(BASE, max_users=100, seed=3)).users.equals(sample.users)
    assert not evaluation_set(world.frames, replace(BASE, max_users=100, seed=4)).users.equals(sample.users)
    assert evaluation_set(world.frames, replace(BASE, max_users=5000)).users.len() == 800  # above the population


def test_sampled_evaluation_reports_the_sampled_users(world) -> None:
    config = replace(BASE, models=("popularity",), max_users=200)
    rows = evaluate(world.frames, world.hgnn, world.text, None, config).filter(pl.col("metric") == "hr@10")
    assert dict(zip(rows["slice"], rows["users"]))["all"] == 200
    with pytest.raises(ValueError, match="max_users"):
        replace(BASE, max_users=-1)


def test_unknown_models_are_refused(world) -> None:
    with pytest.raises(ValueError, match="unknown models"):
        evaluate(world.frames, world.hgnn, world.text, None, replace(BASE, models=("magic",)))


def test_ablation_flags_run_as_models(world) -> None:
    config = EvaluateConfig(**EVAL_TYPES, models=("two_tower_hgnn_no_weak_signals",), two_tower=TwoTowerConfig(**TYPES, epochs=1))
    frame = evaluate(world.frames, world.hgnn, world.text, None, config)
    assert set(frame["model"]) == {"two_tower_hgnn_no_weak_signals"}


def test_plot_is_a_png(results) -> None:
    assert plot_metrics(results).startswith(b"\x89PNG\r\n\x1a\n")
