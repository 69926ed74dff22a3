"""Rank fusion: the weighted reciprocal-rank sum, its grid on validation, components fitted once."""
from __future__ import annotations

import polars as pl
import pytest

from models import protocol
from models.evaluate import PRODUCTION_MODEL, EvaluateConfig, evaluation_set, model_builders, VALIDATION
from models.fusion import FusedRecommender, FusionConfig, fuse
from models.recommender import RECOMMENDATION_SCHEMA
from models.two_tower import TwoTowerConfig
from tests.conftest import EVAL_TYPES, TYPES
from tests.models.test_protocol import frames_of, world


def lists(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame([(u, i, r, 1.0 / r) for u, i, r in rows], schema=RECOMMENDATION_SCHEMA, orient="row")


def test_fuse_sums_weighted_reciprocal_ranks_and_breaks_ties_by_item() -> None:
    first = lists([("u", "a", 1), ("u", "b", 2), ("u", "c", 3), ("v", "a", 1)])
    second = lists([("u", "c", 1), ("u", "b", 2), ("w", "z", 1)])
    fused = fuse([first, second], (1.0, 2.0), offset=0.0, k=3)
    u = fused.filter(pl.col("user_id") == "u").sort("rank")
    # a: 1/1; b: 1/2 + 2/2 = 1.5; c: 1/3 + 2/1 = 2.33
    assert u["item_id"].to_list() == ["c", "b", "a"]
    assert u["score"].to_list() == pytest.approx([7 / 3, 1.5, 1.0])
    # a user only one component has a list for keeps that list; k cuts every list
    assert fused.filter(pl.col("user_id") == "w")["item_id"].to_list() == ["z"]
    assert fuse([first, second], (1.0, 1.0), offset=0.0, k=1).group_by("user_id").len()["len"].max() == 1
    # equal scores: the smaller item_id first
    tie = fuse([lists([("u", "y", 1)]), lists([("u", "x", 1)])], (1.0, 1.0), offset=5.0, k=2)
    assert tie["item_id"].to_list() == ["x", "y"] and tie["rank"].to_list() == [1, 2]
    assert fuse([first.clear()], (1.0,), 20.0, 10).schema == pl.Schema(RECOMMENDATION_SCHEMA)


def test_fusion_config_checks_its_parts_and_reads_json_lists() -> None:
    assert FusionConfig(["item_knn", "ease"], [1, 2]) == FusionConfig(("item_knn", "ease"), (1.0, 2.0))
    with pytest.raises(ValueError, match="one weight per model"):
        FusionConfig(("item_knn", "ease"), (1.0,))
    with pytest.raises(ValueError, match="its own component"):
        FusionConfig(("fusion",), (1.0,))
    with pytest.raises(ValueError, match="weights > 0"):
        FusionConfig(("item_knn",), (0.0,))
    frames = frames_of(world())
    config = EvaluateConfig(**EVAL_TYPES, two_tower=TwoTowerConfig(**TYPES), fusion=FusionConfig(("knn",), (1.0,)))
    with pytest.raises(ValueError, match="not models"):
        model_builders(frames, None, pl.DataFrame(), None, pl.Series([], dtype=pl.String), config)


def test_components_are_fitted_once_and_production_replaces_the_refit() -> None:
    frames = frames_of(world())
    config = EvaluateConfig(**EVAL_TYPES, two_tower=TwoTowerConfig(**TYPES),
                            fusion=FusionConfig(("item_knn", PRODUCTION_MODEL), (1.0, 0.5)))
    chosen = evaluation_set(frames, config, VALIDATION)
    popular = model_builders(frames, None, pl.DataFrame(), None, chosen.catalogue, config)["popularity"]()
    calls = []
    builders = model_builders(frames, None, pl.DataFrame(), None, chosen.catalogue, config, chosen.users,
                              VALIDATION.fitted, production=lambda: calls.append(1) or popular)
    fused = builders["fusion"]()
    assert builders[PRODUCTION_MODEL]() is fused.components[PRODUCTION_MODEL] is popular
    assert builders["item_knn"]() is fused.components["item_knn"]
    builders["fusion"]()
    assert calls == [1]
    ranked = fused.recommend(chosen.users, 10)
    assert ranked.group_by("user_id").len()["len"].max() == 10
    # every item of the fused top 10 is in one of the components' top 100
    pairs = pl.concat([fused.components[name].recommend(chosen.users, 100).select("user_id", "item_id")
                       for name in fused.config.models])
    assert ranked.join(pairs, on=["user_id", "item_id"], how="anti").height == 0


@pytest.fixture(scope="module")
def validation() -> protocol.Validation:
    frames = frames_of(world())
    text = pl.DataFrame({"item_id": frames.items["item_id"], "embedding": [[1.0, 0.0]] * frames.items.height})
    config = EvaluateConfig(**EVAL_TYPES, models=("popularity", "item_knn", "ease", PRODUCTION_MODEL, "fusion"),
                            two_tower=TwoTowerConfig(**TYPES, epochs=1, use_hgnn=False))
    return protocol.validate(frames, None, text, None, config)


def test_the_fusion_grid_keeps_the_point_that_validated_best(validation) -> None:
    grid = validation.grid.filter(pl.col("model") == "fusion")
    assert grid.height == len(protocol.FUSION_GRID)
    assert validation.config.fusion in protocol.FUSION_GRID
    best = grid.sort("value", descending=True, maintain_order=True).row(0, named=True)
    assert best["setting"] == str(protocol.asdict(validation.config.fusion))
    metric, slice_name = protocol.TUNING_METRIC[1], protocol.TUNING_METRIC[0]
    fusion = validation.metrics.filter((pl.col("model") == "fusion") & (pl.col("slice") == slice_name)
                                       & (pl.col("metric") == metric))
    assert fusion["value"].item() == pytest.approx(best["value"])
    registered = {"tuned": protocol.tuned_settings(validation.config)}
    assert protocol.tuned(validation.config, registered).fusion == validation.config.fusion


def test_the_fusion_is_servable_but_never_the_best_baseline(validation) -> None:
    assert "fusion" in protocol.SERVABLE
    rows = validation.metrics.filter(pl.col("model") != "fusion").vstack(
        validation.metrics.filter(pl.col("model") == "fusion").with_columns(value=pl.lit(2.0)))
    assert all(step["model"] == "fusion" for step in protocol.serving_plan(rows).values())
    assert protocol.best_baseline(rows, "all")[0] != "fusion"
