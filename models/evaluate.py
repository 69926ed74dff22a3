"""Offline evaluation: every model fitted on the periods before a scored period and scored side by side on it.

The protocol (README, "Evaluation protocol") has two phases over features.splits:
- validation: models fitted on 'train', scored on 'valid'. Every choice (tuning, the promotion gate,
  the serving plan) reads this phase only.
- holdout: models refitted on 'train' + 'valid' with the chosen settings, scored once on 'holdout'
  and reported, never used to choose.
Catalogue: target-type items released before the scored period starts (an unknown release date counts
as released). Items released during it could not be known, so no model may recommend them, and
interactions with them are dropped from the targets rather than counted as misses no model could
avoid; coverage is over the same catalogue.
Targets: (user, item) of the target type with any interaction in the scored period (weak signals
included) and none in the fitted periods. Every list leaves out the target-type items the user
touched in the fitted periods. Models read only the fitted periods, whatever their config says.
Slices: a user is warm when they touched the target type in the fitted periods, else cold.
Users: every user with a target, or a seeded uniform sample of `max_users` of them (default 100,000).
"""
from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models import baselines, two_tower
from models.baselines import AlsConfig, EaseConfig, ItemKnnConfig
from models.fusion import FusedRecommender, FusionConfig
from models.metrics import SLICES, offline_metrics
from models.recommender import FeatureFrames, VectorRecommender
from models.two_tower import TwoTowerConfig

PRODUCTION_MODEL = "two_tower_hgnn"  # 2T-HGNN: the model the pipeline trains, bundles and serves
# 'fusion' is a rank fusion of other models' lists (FusionConfig.models), 2T-HGNN's among them by default.
MODELS = ("popularity", "item_knn", "ease", "als", "llm_knn", "hgnn", "two_tower", PRODUCTION_MODEL, "fusion")
# The paper's ablations that are two-tower flags; add their names to EvaluateConfig.models to run them.
ABLATIONS = {
    f"{PRODUCTION_MODEL}_no_weak_signals": {"use_weak_signals": False},
    f"{PRODUCTION_MODEL}_no_profile": {"use_profile": False},
    # every LLM output the towers read: topics (item multi-hot, user shares) and the profile text's vector
    f"{PRODUCTION_MODEL}_no_llm_features": {"use_topics": False, "use_profile": False},
}
LLM_ABLATION = f"{PRODUCTION_MODEL}_no_llm_features"  # eval/offline_metrics reports it every night
COLUMNS = ("model", "slice", "metric", "value", "std_error", "users")


NIGHTLY_ABLATIONS = ("two_tower", LLM_ABLATION)  # the ablations eval scores by default: each one more two-tower fit


def evaluated_models(ablations: bool = True) -> tuple[str, ...]:
    """What eval/offline_metrics scores: every model and LLM_ABLATION, less NIGHTLY_ABLATIONS without `ablations`."""
    models = (*MODELS, LLM_ABLATION)
    return models if ablations else tuple(name for name in models if name not in NIGHTLY_ABLATIONS)


class Phase(NamedTuple):
    """A scored period and the periods the models are fitted on before it."""

    scored: str
    fitted: tuple[str, ...]


VALIDATION = Phase("valid", ("train",))
HOLDOUT = Phase("holdout", ("train", "valid"))


@dataclass(frozen=True)
class EvaluateConfig:
    target_type: str  # the pipeline's types, from settings
    graph_types: tuple[str, ...]
    two_tower: TwoTowerConfig  # the two-tower variants are this config with their switches turned
    k: int = 100  # the configured K of Recall@K and NDCG@K (10 and 20 are always reported)
    list_length: int = 100  # the paper computes MRR and coverage on the top 100
    models: tuple[str, ...] = MODELS
    item_knn: ItemKnnConfig = field(default_factory=ItemKnnConfig)
    ease: EaseConfig = field(default_factory=EaseConfig)
    als: AlsConfig = field(default_factory=AlsConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    # Users scored at most, a seeded uniform sample of those with holdout targets (0 = all): the standard
    # errors stay small while a large population's lists are not all ranked six times every night.
    max_users: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 10 <= self.k <= self.list_length:
            raise ValueError(f"need 10 <= k <= list_length (got k={self.k}, list_length={self.list_length})")
        if self.max_users < 0:
            raise ValueError(f"max_users must be 0 (all) or positive (got {self.max_users})")


class EvaluationSet(NamedTuple):
    catalogue: pl.Series  # target-type item ids released before the scored period
    targets: pl.DataFrame  # (user_id, item_id) of the evaluated users
    users: pl.Series  # the evaluated users, sorted
    population: int  # users with targets in the scored period before sampling
    user_stats: pl.DataFrame  # features.user_stats with is_warm over the fitted periods: the slices


def scored_targets(frames: FeatureFrames, target_type: str, catalogue: pl.Series,
                   phase: Phase = HOLDOUT) -> pl.DataFrame:
    """(user_id, item_id): catalogue items of the target type first touched by the user in the scored period."""
    fitted = frames.history(phase.fitted).select("user_id", "item_id")
    return (frames.history([phase.scored]).filter(pl.col("item_type") == target_type)
            .join(catalogue.cast(pl.String).to_frame("item_id"), on="item_id", how="semi")
            .select("user_id", "item_id").unique()
            .join(fitted, on=["user_id", "item_id"], how="anti")
            .sort("user_id", "item_id"))


def slice_stats(frames: FeatureFrames, target_type: str, phase: Phase) -> pl.DataFrame:
    """features.user_stats with is_warm recomputed over the fitted periods (a validation user stays cold
    until they touch the target type; a user who converted during validation is warm in the holdout)."""
    warm = (frames.history(phase.fitted).filter(pl.col("item_type") == target_type)
            .select(pl.col("user_id").cast(pl.String)).unique())
    return frames.user_stats.with_columns(is_warm=pl.col("user_id").cast(pl.String).is_in(warm["user_id"].implode()))


def evaluation_set(frames: FeatureFrames, config: EvaluateConfig, phase: Phase = HOLDOUT) -> EvaluationSet:
    """The catalogue, and the users (at most config.max_users, sampled with config.seed) with their targets."""
    cut = frames.cut(phase.scored)
    catalogue = frames.released(config.target_type, cut)
    if catalogue.len() == 0:
        raise ValueError(f"no {config.target_type!r} item was released before {cut} (start of {phase.scored!r}); "
                         "check raw.items release dates or the target type")
    targets = scored_targets(frames, config.target_type, catalogue, phase)
    users = targets["user_id"].unique().sort()
    population = users.len()
    if config.max_users and population > config.max_users:
        users = users.sample(config.max_users, seed=config.seed).sort()
        targets = targets.join(users.to_frame(), on="user_id", how="semi")
    return EvaluationSet(catalogue, targets, users, population, slice_stats(frames, config.target_type, phase))


def score(builders: dict[str, Callable[[], Any]], names: tuple[str, ...],
          frames: FeatureFrames, chosen: EvaluationSet, config: EvaluateConfig,
          keep_ranks: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(metrics in COLUMNS, the top `keep_ranks` of each list) of the named models on one evaluation set."""
    unknown = [name for name in names if name not in builders]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {sorted(builders)}")
    metrics, lists = [], []
    for name in names:
        recommendations = builders[name]().recommend(chosen.users, config.list_length)
        scores = offline_metrics(recommendations, chosen.targets, chosen.user_stats, frames.item_stats,
                                 chosen.catalogue.len(), config.k, config.list_length)
        metrics.append(scores.with_columns(model=pl.lit(name)).select(COLUMNS))
        lists.append(recommendations.filter(pl.col("rank") <= keep_ranks)
                     .select(pl.lit(name).alias("model"), "user_id", "item_id", "rank", "score"))
    return pl.concat(metrics), pl.concat(lists)


def evaluate(frames: FeatureFrames, hgnn_embeddings: pl.DataFrame | None, text_embeddings: pl.DataFrame,
             profile_embeddings: pl.DataFrame | None, config: EvaluateConfig, phase: Phase = HOLDOUT) -> pl.DataFrame:
    """(model, slice, metric, value, std_error, users), one block per model in `config.models`."""
    chosen = evaluation_set(frames, config, phase)
    builders = model_builders(frames, hgnn_embeddings, text_embeddings, profile_embeddings, chosen.catalogue, config,
                              chosen.users, phase.fitted)
    return score(builders, config.models, frames, chosen, config)[0]


def factors_as_ease(config: two_tower.TwoTowerConfig, ease: baselines.EaseConfig) -> two_tower.TwoTowerConfig:
    """The two-tower's history factors fitted with EASE's setting (the one validation chose, once tuned)."""
    return replace(config, history_factor_regularization=ease.regularization, history_factor_max_items=ease.max_items)


def model_builders(frames: FeatureFrames, hgnn: pl.DataFrame | None, text: pl.DataFrame, profile: pl.DataFrame | None,
                   catalogue: pl.Series, config: EvaluateConfig, users: pl.Series | None = None,
                   periods: tuple[str, ...] = HOLDOUT.fitted, production: Callable[[], Any] | None = None,
                   ) -> dict[str, Callable[[], Any]]:
    """One recommender factory per model name, fitted on `periods`; each is built only when asked for.

    The two-tower models encode only `users` (default: every user in user_stats), the evaluated ones.
    `production` replaces 2T-HGNN's fit (serving passes the promoted model). The components of the
    fusion are fitted once, however often they and the fusion are asked for.
    """
    target = config.target_type
    tt = factors_as_ease(replace(config.two_tower, target_type=target, graph_types=config.graph_types,
                                 periods=periods), config.ease)

    def two_tower_variant(**flags: bool) -> Callable[[], VectorRecommender]:
        def build() -> VectorRecommender:
            variant = replace(tt, **flags)
            graph = hgnn if variant.use_hgnn else None
            model = two_tower.fit(frames, variant, text_embeddings=text, hgnn_embeddings=graph,
                                  profile_embeddings=profile)
            return model.recommender(frames, catalogue, text, graph, profile, users)
        return build

    def hgnn_alone() -> VectorRecommender:
        if hgnn is None:
            raise ValueError("model 'hgnn' needs hgnn_embeddings; pass them or drop 'hgnn' from config.models")
        return baselines.mean_embedding_knn(frames, hgnn, catalogue, target, periods)

    def fused() -> FusedRecommender:
        return FusedRecommender({name: built[name]() for name in config.fusion.models}, config.fusion)

    built: dict[str, Callable[[], Any]] = {
        "popularity": lambda: baselines.popularity(frames, catalogue, target, periods),
        "item_knn": lambda: baselines.item_knn(frames, catalogue, target, config.item_knn, periods),
        "ease": lambda: baselines.ease(frames, catalogue, target, config.ease, periods),
        "als": lambda: baselines.als(frames, catalogue, target, config.graph_types, config.als, periods),
        "llm_knn": lambda: baselines.mean_embedding_knn(frames, text, catalogue, target, periods,
                                                        topics=frames.item_topics),
        "hgnn": hgnn_alone,
        "two_tower": two_tower_variant(use_hgnn=False),
        PRODUCTION_MODEL: production or two_tower_variant(),
        **{name: two_tower_variant(**flags) for name, flags in ABLATIONS.items()},
        "fusion": fused,
    }
    unknown = [name for name in config.fusion.models if name not in built]
    if unknown:
        raise ValueError(f"fusion components {unknown} are not models; choose from {sorted(built)}")
    built |= {name: functools.cache(built[name]) for name in config.fusion.models}
    return built


def plot_metrics(frame: pl.DataFrame) -> bytes:
    """PNG: one panel per metric, bars per slice grouped by model, whiskers of one standard error."""
    metrics = frame["metric"].unique(maintain_order=True).to_list()
    models = frame["model"].unique(maintain_order=True).to_list()
    slices = [s for s in SLICES if s in set(frame["slice"].to_list())]
    cols = min(3, max(1, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / cols))
    figure = Figure(figsize=(5 * cols, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    width = 0.8 / max(1, len(models))
    for ax, metric in zip(axes, metrics):
        for m, model in enumerate(models):
            rows_m = (pl.DataFrame({"slice": slices})
                      .join(frame.filter((pl.col("metric") == metric) & (pl.col("model") == model)),
                            on="slice", how="left", maintain_order="left"))
            ax.bar([s + m * width for s in range(len(slices))], rows_m["value"].fill_null(0.0).to_list(), width,
                   yerr=rows_m["std_error"].fill_null(0.0).to_list(), label=model, capsize=2)
        ax.set_title(metric)
        ax.set_xticks([s + 0.4 - width / 2 for s in range(len(slices))], slices)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if metrics:
        figure.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center",
                      ncols=min(4, len(models)), fontsize="small")
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()
