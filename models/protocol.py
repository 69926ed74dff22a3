"""Choices made on validation only: baseline settings from small grids, and the serving plan per user slice.

Every model is fitted on 'train' and scored on 'valid' (models.evaluate.VALIDATION). Each baseline with
settings runs its grid and keeps the setting with the best NDCG@10 over all validated users; the rank
fusion then runs its grid (FUSION_GRID) over the tuned models' lists alike. The serving plan gives each
slice (cold, warm) the model with the best HR@10 on that slice, whatever it is, so what is served is
never worse on validation than the best baseline. The holdout is not read
here: these functions drop its rows before anything else happens.

The grids need not run every night: settings an earlier night's validation chose stand for `retune_days`
(`reusable`), and validation then scores each model at those settings only. An earlier validation period
ends where that night's holdout began, at or before tonight's, so reused settings never read tonight's
holdout either.
"""
from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any, NamedTuple

import polars as pl

from models.baselines import AlsConfig, EaseConfig, ItemKnnConfig
from models.evaluate import (HOLDOUT, PRODUCTION_MODEL, VALIDATION, EvaluateConfig, EvaluationSet, evaluation_set,
                             model_builders, score)
from models.fusion import FusedRecommender, FusionConfig
from models.recommender import RECOMMENDATION_SCHEMA, FeatureFrames, VectorRecommender
from models.two_tower import with_factor_weight

# Small grids around each default: neighbours kept, the L2 penalty, factors and regularisation.
GRIDS: dict[str, tuple[Any, ...]] = {
    "item_knn": (ItemKnnConfig(neighbours=20), ItemKnnConfig(neighbours=100), ItemKnnConfig(neighbours=400)),
    "ease": (EaseConfig(regularization=50.0), EaseConfig(regularization=500.0), EaseConfig(regularization=5000.0)),
    "als": (AlsConfig(factors=32, regularization=0.05), AlsConfig(factors=64, regularization=0.05),
            AlsConfig(factors=64, regularization=0.5)),
}
# The fusion's components and weights (reciprocal-rank offset 20): the two strongest neighbourhood baselines
# with 2T-HGNN at half or full weight, without it, and item-KNN with 2T-HGNN only. Scored on the tuned models.
FUSION_GRID = (
    FusionConfig(("item_knn", "ease", PRODUCTION_MODEL), (1.0, 1.0, 0.5)),
    FusionConfig(("item_knn", "ease", PRODUCTION_MODEL), (1.0, 1.0, 1.0)),
    FusionConfig(("item_knn", PRODUCTION_MODEL), (1.0, 0.5)),
    FusionConfig(("item_knn", "ease"), (1.0, 1.0)),
)
# 2T-HGNN's history_factor_weight (models/two_tower.py): its validated model scored at each, no refit
FACTOR_WEIGHTS = (1.0, 2.0, 4.0, 8.0)
TUNED = (*GRIDS, "fusion", "two_tower")  # the settings chosen on validation, recorded with the registry row
TUNED_TWO_TOWER = ("history_factor_weight",)  # of the two-tower's settings, those validation chooses
TUNING_METRIC = ("all", "ndcg@10")
PLAN_METRIC = "hr@10"  # the registry's and the gate's headline metric
PLAN_SLICES = ("cold", "warm")
# What a slice can be served by. Not HGNN alone (warm users only; its vectors serve through 2T-HGNN), nor the
# two-tower without HGNN and the other ablations, which would need more nightly training runs.
FUSION = "fusion"  # the fusion's model name
SERVABLE = ("popularity", "item_knn", "ease", "als", "llm_knn", PRODUCTION_MODEL, FUSION)
NOT_BASELINES = (FUSION, "hgnn", "two_tower")  # ours: 2T-HGNN is among the fusion's parts; the rest, its ablations
SERVED = "served"  # the model name of the plan's own rows: per slice, the lists of the model the plan chose


class Validation(NamedTuple):
    metrics: pl.DataFrame  # (model, slice, metric, value, std_error, users) on 'valid', chosen settings
    grid: pl.DataFrame  # (model, setting, value): the tuning metric of every grid point
    config: EvaluateConfig  # the input config with the chosen baseline settings


def without_holdout(frames: FeatureFrames) -> FeatureFrames:
    """The frames with every holdout-period interaction removed: what validation may see."""
    return replace(frames, interactions=frames.interactions.filter(pl.col("period") != HOLDOUT.scored))


def validate(frames: FeatureFrames, hgnn: pl.DataFrame | None, text: pl.DataFrame, profile: pl.DataFrame | None,
             config: EvaluateConfig, retune: bool = True) -> Validation:
    """Tune the baselines' grids, then score every model of `config.models` on validation.

    `retune=False` keeps `config`'s settings (those `reusable` returned, applied by `tuned`): each grid,
    the factor weight and the fusion are scored at that one point, and the grid frame holds those points.
    """
    grids = GRIDS if retune else {name: (getattr(config, name),) for name in GRIDS}
    frames = without_holdout(frames)
    chosen = evaluation_set(frames, config, VALIDATION)
    grid_rows: list[dict[str, Any]] = []
    settings: dict[str, Any] = {}
    fitted: dict[str, tuple[Callable[[], Any], pl.DataFrame]] = {}  # each grid's best, kept rather than refitted
    for name, grid in grids.items():
        if name not in config.models:
            continue
        best = None
        for setting in grid:
            trial = replace(config, **{name: setting})
            builders = cached(model_builders(frames, hgnn, text, profile, chosen.catalogue, trial, chosen.users,
                                             VALIDATION.fitted))
            scores = score(builders, (name,), frames, chosen, trial)[0]
            value = _metric(scores, name, *TUNING_METRIC)
            grid_rows.append({"model": name, "setting": str(asdict(setting)), "value": value})
            if best is None or _better(value, best[0]):
                best = (value, setting, builders[name], scores)
        settings[name], fitted[name] = best[1], best[2:]
    tuned = replace(config, **settings)
    builders = cached(model_builders(frames, hgnn, text, profile, chosen.catalogue, tuned, chosen.users,
                                     VALIDATION.fitted))
    builders |= {name: build for name, (build, _) in fitted.items()}
    if (PRODUCTION_MODEL in config.models and config.two_tower.history_factor_rank
            and config.two_tower.history_factor_weight > 0):
        weights = FACTOR_WEIGHTS if retune else (config.two_tower.history_factor_weight,)
        weight, recommender, scores = _tune_factor_weight(builders[PRODUCTION_MODEL](), frames, chosen, tuned,
                                                          grid_rows, weights)
        tuned = replace(tuned, two_tower=replace(tuned.two_tower, history_factor_weight=weight))
        builders[PRODUCTION_MODEL] = lambda: recommender
        fitted[PRODUCTION_MODEL] = (builders[PRODUCTION_MODEL], scores)
    if "fusion" in config.models:
        setting, fused, scores = _tune_fusion(builders, frames, chosen, tuned, grid_rows,
                                              FUSION_GRID if retune else (config.fusion,))
        tuned = replace(tuned, fusion=setting)
        builders["fusion"] = lambda: fused
        fitted["fusion"] = (builders["fusion"], scores)
    rest = tuple(name for name in config.models if name not in fitted)
    blocks = {name: frame for name, (_, frame) in fitted.items()}
    if rest:
        scored = score(builders, rest, frames, chosen, tuned)[0]
        blocks |= {name: scored.filter(pl.col("model") == name) for name in rest}
    metrics = pl.concat([blocks[name] for name in config.models])
    plan = serving_plan(metrics)
    builders[SERVED] = served_builder(builders, plan, chosen)
    metrics = pl.concat([metrics, score(builders, (SERVED,), frames, chosen, tuned)[0]])
    grid_frame = pl.DataFrame(grid_rows, schema={"model": pl.String, "setting": pl.String, "value": pl.Float64})
    return Validation(metrics, grid_frame, tuned)


def _tune_fusion(builders: Mapping[str, Callable[[], Any]], frames: FeatureFrames, chosen: EvaluationSet,
                 config: EvaluateConfig, grid_rows: list[dict[str, Any]], grid: Sequence[FusionConfig] = FUSION_GRID,
                 ) -> tuple[FusionConfig, FusedRecommender, pl.DataFrame]:
    """The `grid` point with the best tuning metric over the (already fitted) `builders`' lists, with its
    recommender and scores; every point's value is appended to `grid_rows`."""
    names = {name for setting in grid for name in setting.models}
    depth = max(max(setting.depth for setting in grid), config.list_length)
    ranked = {name: FixedLists(builders[name]().recommend(chosen.users, depth)) for name in names}  # once each
    best = None
    for setting in grid:
        fused = FusedRecommender({name: ranked[name] for name in setting.models}, setting)
        scores = score({"fusion": lambda fused=fused: fused}, ("fusion",), frames, chosen, config)[0]
        value = _metric(scores, "fusion", *TUNING_METRIC)
        grid_rows.append({"model": "fusion", "setting": str(asdict(setting)), "value": value})
        if best is None or _better(value, best[0]):
            best = (value, setting, fused, scores)
    return best[1], best[2], best[3]


def _tune_factor_weight(fitted: VectorRecommender, frames: FeatureFrames, chosen: EvaluationSet,
                        config: EvaluateConfig, grid_rows: list[dict[str, Any]],
                        weights: Sequence[float] = FACTOR_WEIGHTS) -> tuple[float, VectorRecommender, pl.DataFrame]:
    """The `weights` point with the best tuning metric for 2T-HGNN's `fitted` lists (its user vectors
    re-weighted, the model not refitted), with its recommender and scores; each point goes to `grid_rows`."""
    two_tower = config.two_tower
    best = None
    for weight in weights:
        recommender = with_factor_weight(fitted, two_tower.hidden[-1], weight / two_tower.history_factor_weight)
        scores = score({PRODUCTION_MODEL: lambda r=recommender: r}, (PRODUCTION_MODEL,), frames, chosen, config)[0]
        value = _metric(scores, PRODUCTION_MODEL, *TUNING_METRIC)
        grid_rows.append({"model": PRODUCTION_MODEL, "setting": str({"history_factor_weight": weight}),
                          "value": value})
        if best is None or _better(value, best[0]):
            best = (value, weight, recommender, scores)
    return best[1], best[2], best[3]


class FixedLists:
    """Lists ranked once, served again: the top `k` of each requested user's rows."""

    def __init__(self, lists: pl.DataFrame) -> None:
        self.lists = lists

    def recommend(self, user_ids: Sequence[str] | pl.Series, k: int) -> pl.DataFrame:
        users = pl.Series(list(user_ids), dtype=pl.String)
        return self.lists.filter(pl.col("user_id").is_in(users.implode()) & (pl.col("rank") <= k))


def tuned(config: EvaluateConfig, registered: Mapping[str, Any]) -> EvaluateConfig:
    """`config` with the settings a registry row's metrics['tuned'] recorded (absent: `config`'s own)."""
    settings = registered.get("tuned", {})
    chosen = {name: replace(getattr(config, name), **{key: tuple(value) if isinstance(value, list) else value
                                                     for key, value in settings[name].items()})
              for name in TUNED if name in settings}
    return replace(config, **chosen)


def reusable(registered: Mapping[str, Any] | None, as_of: dt.date, holdout_start: dt.datetime, retune_days: int,
             config: EvaluateConfig) -> tuple[dict[str, dict[str, Any]] | None, str]:
    """(settings, why): the tuned settings of `registered` (the newest registry row that records `tuned_at`,
    the as-of date of the validation whose grids chose them) when tonight may score them without its grids,
    else None; `why` says which, for the log and the registry.

    They stand while they are younger than `retune_days` (0: the grids run every night), for the same target
    and graph types and the same tuned models, and only when the data they were chosen on ended (the row's
    `train_end`, where its holdout began) at or before tonight's `holdout_start`. A later `tuned_at` than
    tonight's as-of (a backfill), or a longer holdout tonight, retunes: tonight's holdout was read then.
    """
    if retune_days == 0:
        return None, "grids run: retune_days is 0 (every night)"
    if not registered or "tuned_at" not in registered.get("metrics", {}):
        return None, "grids run: no earlier night recorded validated settings"
    metrics, previous = registered["metrics"], registered.get("config", {}).get("two_tower", {})
    tuned_at = dt.date.fromisoformat(metrics["tuned_at"])
    age = (as_of - tuned_at).days
    if age < 0:
        return None, f"grids run: the settings were validated at a later as-of ({tuned_at}) than tonight's ({as_of})"
    if age >= retune_days:
        return None, f"grids run: the settings validated at {tuned_at} are {age} days old (retune_days {retune_days})"
    ended = registered.get("train_end")
    if ended is None or ended > holdout_start:
        return None, (f"grids run: the settings were validated on data up to {ended}, after tonight's holdout "
                      f"begins ({holdout_start})")
    if (previous.get("target_type") != config.target_type
            or tuple(previous.get("graph_types", ())) != tuple(config.graph_types)):
        return None, "grids run: the settings were validated for other target or graph types"
    settings = metrics.get("tuned", {})
    if set(settings) != set(TUNED):
        return None, f"grids run: the recorded settings cover {sorted(settings)}, not {sorted(TUNED)}"
    days = f"{age} day" if age == 1 else f"{age} days"
    return settings, (f"settings validated at {tuned_at} ({days} before tonight; retune_days {retune_days}) "
                      f"from {registered['model_version']}: each model scored at them only")


def tuned_settings(config: EvaluateConfig) -> dict[str, dict[str, Any]]:
    """What validation chose, as the registry records it (metrics['tuned']): each grid's setting in whole,
    of the two-tower's only TUNED_TWO_TOWER."""
    settings = {name: asdict(getattr(config, name)) for name in TUNED}
    settings["two_tower"] = {key: settings["two_tower"][key] for key in TUNED_TWO_TOWER}
    return settings


def with_validation(holdout: pl.DataFrame, registered: Mapping[str, Any]) -> pl.DataFrame:
    """Holdout metrics beside the validation metrics a registry row recorded: (split, *COLUMNS)."""
    rows = registered.get("validation_rows") or []
    valid = pl.DataFrame(rows, schema=holdout.schema) if rows else holdout.clear()
    return pl.concat([valid.select(pl.lit(VALIDATION.scored).alias("split"), pl.all()),
                      holdout.select(pl.lit(HOLDOUT.scored).alias("split"), pl.all())])


def cached(builders: Mapping[str, Callable[[], Any]]) -> dict[str, Callable[[], Any]]:
    """The builders, each fitting its model once however often it is asked for."""
    return {name: functools.cache(build) for name, build in builders.items()}


def served_builder(builders: Mapping[str, Callable[[], Any]], plan: Mapping[str, Mapping[str, Any]],
                   chosen: EvaluationSet) -> Callable[[], SlicedRecommender]:
    """A builder of the plan's lists on an evaluation set: warm users get the warm model's, the rest the cold one's."""
    warm = chosen.user_stats.filter(pl.col("is_warm"))["user_id"].cast(pl.String)
    return lambda: SlicedRecommender({name: builders[step["model"]]() for name, step in plan.items()}, warm)


class SlicedRecommender:
    """One recommender per slice: warm users (touched the target type before) get `by_slice['warm']`'s
    lists, everybody else `by_slice['cold']`'s. The offline face of the serving plan."""

    def __init__(self, by_slice: Mapping[str, Any], warm_users: pl.Series) -> None:
        self.by_slice = by_slice
        self.warm_users = warm_users

    def recommend(self, user_ids: Sequence[str] | pl.Series, k: int) -> pl.DataFrame:
        users = pl.Series(list(user_ids), dtype=pl.String)
        is_warm = users.is_in(self.warm_users.implode())
        parts = [self.by_slice[name].recommend(users.filter(mask), k)
                 for name, mask in (("warm", is_warm), ("cold", ~is_warm)) if mask.any()]
        return pl.concat(parts) if parts else pl.DataFrame(schema=RECOMMENDATION_SCHEMA)


def serving_plan(metrics: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """{slice: {model, value, users, basis}}: per slice the served model, by validation HR@10.

    The best model serves, except that the fusion (2T-HGNN with the baselines, `FUSION_GRID`) stands in for a
    leader that is not a baseline and leads it by at most one standard error (the larger of the two), as
    long as the fusion validated at least as well as every baseline: the pick between ours then follows
    noise, and the fusion held on holdout where a noisy pick did not. What serves never validated below a
    baseline, as the promotion gate demands. `basis` says which rule chose. A slice without validated users
    follows the best model over all users (basis says so). Ties go to 2T-HGNN, then to the order of the
    rows. Only SERVABLE models are candidates.
    """
    rows = metrics.filter((pl.col("metric") == PLAN_METRIC) & pl.col("model").is_in(list(SERVABLE)))
    plan: dict[str, dict[str, Any]] = {}
    for slice_name in PLAN_SLICES:
        own = rows.filter((pl.col("slice") == slice_name) & pl.col("value").is_not_null())
        basis = slice_name
        if own.height == 0:
            own, basis = rows.filter((pl.col("slice") == "all") & pl.col("value").is_not_null()), "all"
        if own.height == 0:
            plan[slice_name] = {"model": PRODUCTION_MODEL, "value": None, "users": 0,
                                "basis": "no validated user: the production model by default"}
            continue
        ranked = own.with_columns(first=pl.col("model") == PRODUCTION_MODEL, order=pl.int_range(pl.len())).sort(
            ["value", "first", "order"], descending=[True, True, False])
        best = ranked.row(0, named=True)
        reason = f"best validation {PLAN_METRIC} on {basis}"
        fusion = own.filter(pl.col("model") == FUSION)
        baselines = _baselines(own)["value"]
        if best["model"] != FUSION and fusion.height and not is_baseline(best["model"]):
            stand_in = fusion.row(0, named=True)
            lead = best["value"] - stand_in["value"]
            if (lead <= max(best["std_error"] or 0.0, stand_in["std_error"] or 0.0)
                    and (baselines.len() == 0 or stand_in["value"] >= baselines.max())):
                reason = (f"fusion: {best['model']} leads it by {lead:.3f} validation {PLAN_METRIC} on {basis}, "
                          f"within one standard error")
                best = stand_in
        plan[slice_name] = {"model": best["model"], "value": best["value"], "users": int(best["users"]),
                            "basis": reason}
    return plan


def is_baseline(model: str) -> bool:
    """A baseline's name: not 2T-HGNN, its ablations, the fusion or the served lists."""
    return not model.startswith(PRODUCTION_MODEL) and model != SERVED and model not in NOT_BASELINES


def _baselines(metrics: pl.DataFrame) -> pl.DataFrame:
    """The rows of `metrics` whose model `is_baseline`."""
    return metrics.filter(pl.col("model").is_in([name for name in metrics["model"].unique().to_list()
                                                 if is_baseline(name)]))


def best_baseline(metrics: pl.DataFrame, slice_name: str) -> tuple[str | None, float | None]:
    """The baseline (not 2T-HGNN, its ablations or the fusion) with the best validation HR@10 on a slice."""
    rows = _baselines(metrics).filter((pl.col("metric") == PLAN_METRIC) & (pl.col("slice") == slice_name)
                                      & pl.col("value").is_not_null())
    if rows.height == 0:
        return None, None
    best = rows.sort("value", descending=True, maintain_order=True).row(0, named=True)
    return best["model"], best["value"]


def _metric(metrics: pl.DataFrame, model: str, slice_name: str, metric: str) -> float | None:
    rows = metrics.filter((pl.col("model") == model) & (pl.col("slice") == slice_name) & (pl.col("metric") == metric))
    return rows["value"][0] if rows.height else None


def _better(value: float | None, best: float | None) -> bool:
    return value is not None and (best is None or value > best)
