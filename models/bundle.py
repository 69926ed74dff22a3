"""A trained 2T-HGNN as one folder, and its offline evaluation beside the paper's baselines."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from models import hgnn, protocol
from models.evaluate import HOLDOUT, PRODUCTION_MODEL, EvaluateConfig, evaluation_set, model_builders, score
from models.metrics import SLICES
from models.recommender import FeatureFrames, VectorRecommender
from models.two_tower import TwoTowerModel

FILES = {"two_tower": "two_tower.pt", "hgnn": "hgnn.pt", "embeddings": "hgnn_item_embeddings.parquet",
         "manifest": "manifest.json"}
BUNDLED_MODEL = PRODUCTION_MODEL  # the name of the bundled model in evaluation and the registry
LIST_LENGTH_KEPT = 10  # the judge reads top-10 lists


@dataclass
class ModelBundle:
    """What serving needs to score users: the two-tower model, the item vectors it was trained on, the HGNN."""

    two_tower: TwoTowerModel
    hgnn_embeddings: pl.DataFrame  # item_id, item_type, embedding
    manifest: dict[str, Any]  # model_version, as_of, target_type, text_model, ...
    hgnn_checkpoint: dict[str, Any] | None = None  # models.hgnn.checkpoint(); None when trained without HGNN

    def save(self, directory: str | Path) -> Path:
        """Write the four files into `directory` (created); returns it."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.two_tower.save(folder / FILES["two_tower"])
        if self.hgnn_checkpoint is not None:
            hgnn.save_checkpoint(self.hgnn_checkpoint, folder / FILES["hgnn"])
        self.hgnn_embeddings.select("item_id", "item_type", "embedding").write_parquet(folder / FILES["embeddings"])
        (folder / FILES["manifest"]).write_text(json.dumps(self.manifest, indent=2, sort_keys=True, default=str))
        return folder

    @staticmethod
    def load(directory: str | Path) -> ModelBundle:
        folder = Path(directory)
        missing = [name for key, name in FILES.items() if key != "hgnn" and not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: missing {missing}; point at a folder written by ModelBundle.save "
                                    "(checkpoint_dir in models.registry)")
        checkpoint = hgnn.load_checkpoint(folder / FILES["hgnn"]) if (folder / FILES["hgnn"]).is_file() else None
        return ModelBundle(
            two_tower=TwoTowerModel.load(folder / FILES["two_tower"]),
            hgnn_embeddings=pl.read_parquet(folder / FILES["embeddings"]),
            manifest=json.loads((folder / FILES["manifest"]).read_text()),
            hgnn_checkpoint=checkpoint,
        )

    def recommender(self, frames: FeatureFrames, candidates: pl.Series, text_embeddings: pl.DataFrame,
                    profile_embeddings: pl.DataFrame | None = None,
                    user_ids: pl.Series | None = None) -> VectorRecommender:
        """The bundled two-tower model over its own periods, with the HGNN vectors it was trained on, for
        `user_ids` (default: every user in user_stats)."""
        graph = self.hgnn_embeddings if self.two_tower.config.use_hgnn else None
        return self.two_tower.recommender(frames, candidates, text_embeddings, graph, profile_embeddings, user_ids)


def evaluate_bundle(bundle: ModelBundle, frames: FeatureFrames, text_embeddings: pl.DataFrame,
                    profile_embeddings: pl.DataFrame | None, config: EvaluateConfig,
                    plan: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(metrics, lists) of every model in `config.models` on the holdout: the protocol's one final scoring.

    'two_tower_hgnn' is the bundled model itself, refitted on train + valid (not retrained here, so what
    is evaluated is what is served); the others are refitted here on train + valid with the settings
    `config` carries (the ones chosen on validation) and the bundle's HGNN vectors. metrics: (model,
    slice, metric, value, std_error, users); lists: (model, user_id, item_id, rank, score), the top 10
    of every model for every evaluated user. With the serving `plan` chosen on validation, the plan's own
    lists are scored too, as model 'served'.
    """
    if not set(bundle.two_tower.config.periods) <= set(HOLDOUT.fitted):
        raise ValueError(f"the bundle was trained on periods {bundle.two_tower.config.periods}; the holdout scores "
                         f"models fitted within {HOLDOUT.fitted} only, or it would have seen the holdout")
    chosen = evaluation_set(frames, config, HOLDOUT)
    tt = replace(bundle.two_tower.config, periods=HOLDOUT.fitted)
    def bundled() -> VectorRecommender:
        return bundle.recommender(frames, chosen.catalogue, text_embeddings, profile_embeddings, chosen.users)

    # the bundled model is 2T-HGNN's row and the fusion's 2T-HGNN component alike
    builders = protocol.cached(model_builders(frames, bundle.hgnn_embeddings, text_embeddings, profile_embeddings,
                                              chosen.catalogue, replace(config, two_tower=tt), chosen.users,
                                              HOLDOUT.fitted, production=bundled))
    names = config.models
    if plan:
        builders[protocol.SERVED] = protocol.served_builder(builders, plan, chosen)
        names = (*names, protocol.SERVED)
    return score(builders, names, frames, chosen, config, LIST_LENGTH_KEPT)


def slice_metrics(metrics: pl.DataFrame, model: str) -> dict[str, dict[str, float]]:
    """{slice: {metric: value, ..., 'users': n}} of one model, the shape of models.registry.metrics.

    'users' is the slice's evaluated users (HR@10's count); a slice without users is {'users': 0}, with
    no metric values, so a reader sees it was empty rather than forgotten.
    """
    rows = metrics.filter(pl.col("model") == model)
    if rows.height == 0:
        raise ValueError(f"no metrics for model {model!r} (got models {metrics['model'].unique().to_list()})")
    out: dict[str, dict[str, float]] = {}
    for slice_name, metric, value, users in rows.select("slice", "metric", "value", "users").iter_rows():
        values = out.setdefault(slice_name, {})
        if metric == "hr@10" or "users" not in values:
            values["users"] = int(users or 0)
        if value is not None:
            values[metric] = value
    return out


def empty_slices(metrics: dict[str, dict[str, float]]) -> list[str]:
    """Slices of slice_metrics' answer (or a registry row's metrics) that had no users."""
    return [name for name in SLICES if metrics.get(name, {}).get("users") == 0]
