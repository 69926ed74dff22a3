"""The evaluation protocol: choices read validation only, the holdout is scored after, the plan serves the best."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from models import protocol
from models.evaluate import HOLDOUT, PRODUCTION_MODEL, VALIDATION, EvaluateConfig, evaluation_set, scored_targets
from models.two_tower import TwoTowerConfig
from tests.conftest import EVAL_TYPES, TYPES
from tests.models.conftest import make_frames, make_items, make_users

CHEAP = ("popularity", "item_knn", "ease")  # no training loop: the protocol, not the models, is under test
CONFIG = EvaluateConfig(**EVAL_TYPES, models=CHEAP, two_tower=TwoTowerConfig(**TYPES, epochs=1))


def world(seed: int = 0, scramble_holdout: bool = False) -> pl.DataFrame:
    """Events of 60 users in 3 communities: podcasts of their community in train, warm users (even) also
    audiobooks; in validation half the cold users and every warm user take new community audiobooks, in
    the holdout the rest. `scramble_holdout` replaces every holdout item by a random audiobook."""
    rng, noise = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    rows = []
    for u in range(60):
        c, user = u % 3, f"u{u:02d}"
        books = [f"a{c}_{j}" for j in rng.permutation(8)]
        rows += [("train", user, f"p{c}_{j}", "play") for j in rng.choice(6, 3, replace=False)]
        warm = u % 2 == 0
        if warm:
            rows += [("train", user, books[0], "play"), ("train", user, books[1], "play")]
        if warm or u % 4 == 1:
            rows.append(("valid", user, books[2], "play"))
        holdout = [books[3], books[4]]
        if scramble_holdout:
            holdout = [f"a{noise.integers(3)}_{noise.integers(8)}" for _ in holdout]
        rows += [("holdout", user, item, "play") for item in holdout]
    return pl.DataFrame(rows, schema=["period", "user_id", "item_id", "event_type"], orient="row")


def frames_of(events: pl.DataFrame):
    ids = [f"p{c}_{j}" for c in range(3) for j in range(6)] + [f"a{c}_{j}" for c in range(3) for j in range(8)]
    items = make_items(ids, ["podcast" if i[0] == "p" else "audiobook" for i in ids])
    return make_frames(events, items, make_users(sorted(set(events["user_id"]))), valid_days=14)


@pytest.fixture(scope="module")
def validation() -> protocol.Validation:
    frames = frames_of(world())
    text = pl.DataFrame({"item_id": frames.items["item_id"], "embedding": [[1.0, 0.0]] * frames.items.height})
    return protocol.validate(frames, None, text, None, CONFIG)


def test_validation_never_reads_the_holdout(validation) -> None:
    frames = frames_of(world(scramble_holdout=True))
    text = pl.DataFrame({"item_id": frames.items["item_id"], "embedding": [[1.0, 0.0]] * frames.items.height})
    scrambled = protocol.validate(frames, None, text, None, CONFIG)
    # the same figures (standard errors to float rounding: users are summed in another order)
    assert_frame_equal(scrambled.metrics, validation.metrics, check_exact=False, rel_tol=1e-9)
    assert_frame_equal(scrambled.grid, validation.grid, check_exact=False, rel_tol=1e-9)
    assert protocol.serving_plan(scrambled.metrics) == protocol.serving_plan(validation.metrics)


def test_validation_scores_the_validation_period(validation) -> None:
    users = validation.metrics.filter((pl.col("model") == "popularity") & (pl.col("metric") == "hr@10"))
    counts = dict(users.select("slice", "users").iter_rows())
    assert counts["warm"] == 30 and counts["cold"] == 15  # every warm user, the cold users with u % 4 == 1
    assert counts["all"] == 45


def test_grid_keeps_the_setting_that_validated_best(validation) -> None:
    for name in ("item_knn", "ease"):
        grid = validation.grid.filter(pl.col("model") == name)
        assert grid.height == len(protocol.GRIDS[name])
        best = grid.sort("value", descending=True, maintain_order=True)["setting"][0]
        assert best == str(protocol.asdict(getattr(validation.config, name)))


def test_served_rows_follow_the_plan_slice_by_slice(validation) -> None:
    plan = protocol.serving_plan(validation.metrics)
    served = validation.metrics.filter(pl.col("model") == protocol.SERVED)
    for slice_name in ("cold", "warm"):
        chosen = plan[slice_name]["model"]
        for metric in ("hr@10", "ndcg@10", "recall@20"):
            row = lambda model: validation.metrics.filter(  # noqa: E731
                (pl.col("model") == model) & (pl.col("slice") == slice_name) & (pl.col("metric") == metric))
            assert served.filter((pl.col("slice") == slice_name) & (pl.col("metric") == metric))["value"].item() \
                == pytest.approx(row(chosen)["value"].item())


def test_plan_picks_the_best_per_slice_prefers_2t_hgnn_on_ties_and_falls_back_to_all() -> None:
    rows = [("popularity", "cold", 0.5, 20), ("item_knn", "cold", 0.7, 20), ("two_tower_hgnn", "cold", 0.6, 20),
            ("popularity", "warm", 0.4, 0), ("item_knn", "warm", None, 0), ("two_tower_hgnn", "warm", None, 0),
            ("popularity", "all", 0.5, 30), ("ease", "all", 0.8, 30), ("two_tower_hgnn", "all", 0.8, 30),
            ("hgnn", "cold", 0.99, 20)]  # HGNN alone is not servable
    metrics = pl.DataFrame([{"model": m, "slice": s, "metric": "hr@10", "value": v, "std_error": 0.0, "users": n}
                            for m, s, v, n in rows])
    plan = protocol.serving_plan(metrics)
    assert plan["cold"]["model"] == "item_knn"
    assert plan["warm"]["model"] == "popularity"  # a value on an empty slice still counts: 0.4 is recorded
    empty = metrics.filter(pl.col("slice") != "warm")
    assert protocol.serving_plan(empty)["warm"] == {"model": "two_tower_hgnn", "value": 0.8, "users": 30,
                                                    "basis": "best validation hr@10 on all"}
    assert protocol.best_baseline(metrics, "all") == ("ease", 0.8)


def test_the_fusion_stands_in_for_2t_hgnn_within_one_standard_error_never_for_or_under_a_baseline() -> None:
    rows = [("two_tower_hgnn", "cold", 0.826, 0.026), ("fusion", "cold", 0.812, 0.027), ("ease", "cold", 0.80, 0.03),
            ("two_tower_hgnn", "warm", 0.60, 0.02), ("fusion", "warm", 0.55, 0.02), ("ease", "warm", 0.50, 0.02),
            ("two_tower_hgnn", "all", 0.7, 0.02), ("fusion", "all", 0.69, 0.02), ("ease", "all", 0.71, 0.02)]
    metrics = pl.DataFrame([{"model": m, "slice": s, "metric": "hr@10", "value": v, "std_error": e, "users": 50}
                            for m, s, v, e in rows])
    plan = protocol.serving_plan(metrics)
    assert plan["cold"]["model"] == "fusion"  # a lead of 0.014 is within the fusion's standard error, 0.027
    assert plan["cold"]["value"] == pytest.approx(0.812)
    assert plan["cold"]["basis"] == ("fusion: two_tower_hgnn leads it by 0.014 validation hr@10 on cold, "
                                     "within one standard error")
    assert plan["warm"]["model"] == "two_tower_hgnn"  # 0.05 is more than either standard error
    assert plan["warm"]["basis"] == "best validation hr@10 on warm"
    baseline_leads = metrics.with_columns(
        value=pl.when((pl.col("model") == "ease") & (pl.col("slice") == "cold")).then(0.83).otherwise("value"))
    assert protocol.serving_plan(baseline_leads)["cold"]["model"] == "ease"  # the gate's rule: never below a baseline
    fusion_under_a_baseline = metrics.with_columns(
        value=pl.when((pl.col("model") == "ease") & (pl.col("slice") == "cold")).then(0.815).otherwise("value"))
    assert protocol.serving_plan(fusion_under_a_baseline)["cold"]["model"] == "two_tower_hgnn"  # never below it
    no_fusion = metrics.filter(pl.col("model") != "fusion")
    assert protocol.serving_plan(no_fusion)["cold"]["model"] == "two_tower_hgnn"


def test_holdout_phase_knows_validation_as_history() -> None:
    frames = frames_of(world())
    holdout = evaluation_set(frames, CONFIG, HOLDOUT)
    valid = evaluation_set(frames, CONFIG, VALIDATION)
    converted = "u01"  # cold in train, took an audiobook during validation
    assert not valid.user_stats.filter(pl.col("user_id") == converted)["is_warm"].item()
    assert holdout.user_stats.filter(pl.col("user_id") == converted)["is_warm"].item()
    seen = frames.history(["train", "valid"]).select("user_id", "item_id")
    assert scored_targets(frames, "audiobook", holdout.catalogue, HOLDOUT).join(
        seen, on=["user_id", "item_id"], how="semi").height == 0


def test_tuned_settings_come_back_from_a_registry_row(validation) -> None:
    registered = {"tuned": protocol.tuned_settings(validation.config)}
    assert set(registered["tuned"]) == set(protocol.TUNED)
    assert registered["tuned"]["two_tower"] == {"history_factor_weight": 1.0}  # only what validation chooses
    again = protocol.tuned(replace(CONFIG), registered)
    assert again.item_knn == validation.config.item_knn and again.ease == validation.config.ease
    assert protocol.tuned(CONFIG, {}) == CONFIG


def test_2t_hgnns_factor_weight_is_chosen_on_validation_without_a_refit() -> None:
    config = replace(CONFIG, models=(*CHEAP, PRODUCTION_MODEL))
    frames = frames_of(world())
    text = pl.DataFrame({"item_id": frames.items["item_id"], "embedding": [[1.0, 0.0]] * frames.items.height})
    validation = protocol.validate(frames, text, text, None, config)  # the text vectors stand in for the HGNN's
    grid = validation.grid.filter(pl.col("model") == PRODUCTION_MODEL)
    assert grid["setting"].to_list() == [str({"history_factor_weight": w}) for w in protocol.FACTOR_WEIGHTS]
    best = grid.sort("value", descending=True, maintain_order=True).row(0, named=True)
    chosen = validation.config.two_tower.history_factor_weight
    assert best["setting"] == str({"history_factor_weight": chosen})
    slice_name, metric = protocol.TUNING_METRIC
    row = validation.metrics.filter((pl.col("model") == PRODUCTION_MODEL) & (pl.col("slice") == slice_name)
                                    & (pl.col("metric") == metric))
    assert row["value"].item() == pytest.approx(best["value"])  # the metrics are the chosen point's
    registered = {"tuned": protocol.tuned_settings(validation.config)}
    assert protocol.tuned(config, registered).two_tower == replace(config.two_tower, history_factor_weight=chosen)
    assert validation.config.two_tower == replace(config.two_tower, history_factor_weight=chosen)


def test_reused_settings_are_scored_alone_with_the_figures_of_the_night_that_chose_them() -> None:
    config = replace(CONFIG, models=(*CHEAP, PRODUCTION_MODEL, "fusion"))
    frames = frames_of(world())
    text = pl.DataFrame({"item_id": frames.items["item_id"], "embedding": [[1.0, 0.0]] * frames.items.height})
    full = protocol.validate(frames, text, text, None, config)
    settings = protocol.tuned_settings(full.config)
    again = protocol.validate(frames, text, text, None, protocol.tuned(config, {"tuned": settings}), retune=False)
    assert again.config == full.config
    assert_frame_equal(again.metrics, full.metrics, check_exact=False, rel_tol=1e-6)
    assert protocol.serving_plan(again.metrics) == protocol.serving_plan(full.metrics)
    # one grid row per tuned model: the chosen point, with the value the full grid gave it
    assert sorted(again.grid["model"].to_list()) == sorted(["item_knn", "ease", PRODUCTION_MODEL, "fusion"])
    assert_frame_equal(again.grid.sort("model"), full.grid.join(again.grid.select("model", "setting"),
                       on=["model", "setting"], how="semi").sort("model"), check_exact=False, rel_tol=1e-6)


def registered(tuned_at: str = "2026-11-20", **changes) -> dict:
    config = {"two_tower": {"target_type": CONFIG.target_type, "graph_types": list(CONFIG.graph_types)}}
    tuned = protocol.tuned_settings(CONFIG)
    return {"model_version": "v1", "config": config | changes, "metrics": {"tuned": tuned, "tuned_at": tuned_at},
            "train_end": dt.datetime.fromisoformat(tuned_at) - dt.timedelta(days=14)}  # its holdout's start


def holdout_start(as_of: dt.date, days: int = 14) -> dt.datetime:
    return dt.datetime.combine(as_of, dt.time()) - dt.timedelta(days=days)


@pytest.mark.parametrize("row, as_of, days, reused, why", [
    (registered(), dt.date(2026, 11, 26), 7, True, "settings validated at 2026-11-20 (6 days before tonight"),
    (registered(), dt.date(2026, 11, 20), 7, True, "(0 days before tonight"),
    (registered(), dt.date(2026, 11, 21), 7, True, "(1 day before tonight"),
    (registered(), dt.date(2026, 11, 27), 7, False, "are 7 days old (retune_days 7)"),
    (registered(), dt.date(2026, 11, 21), 0, False, "retune_days is 0"),
    (registered(), dt.date(2026, 11, 19), 7, False, "a later as-of (2026-11-20) than tonight's (2026-11-19)"),
    (registered(), dt.date(2026, 11, 21), 7, False, "on data up to 2026-11-06 00:00:00, after tonight's holdout"),
    (None, dt.date(2026, 11, 21), 7, False, "no earlier night"),
    ({"model_version": "v0", "metrics": {"tuned": {}}}, dt.date(2026, 11, 21), 7, False, "no earlier night"),
    (registered(two_tower={"target_type": "podcast", "graph_types": ["podcast"]}), dt.date(2026, 11, 21), 7, False,
     "other target or graph types"),
    (registered() | {"metrics": {"tuned": {"ease": {}}, "tuned_at": "2026-11-20"}}, dt.date(2026, 11, 21), 7, False,
     "cover ['ease']"),
])
def test_validated_settings_stand_for_retune_days_on_later_nights_of_the_same_types(row, as_of, days, reused,
                                                                                     why) -> None:
    longer = "on data up to" in why  # tonight's holdout 28 days: it begins before that row's validation ended
    settings, reason = protocol.reusable(row, as_of, holdout_start(as_of, 28 if longer else 14), days, CONFIG)
    assert (settings is not None) == reused and why in reason
    if reused:
        assert settings == row["metrics"]["tuned"] and reason.startswith("settings validated")
    else:
        assert reason.startswith("grids run")
