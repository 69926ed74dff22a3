"""The paper's baselines as VectorRecommenders: popularity, mean-embedding KNN (LLM-KNN, HGNN alone) and ALS.

Every builder reads only the history of `periods` (the offline evaluation passes ('train',)), may
recommend only `candidates`, and excludes what each user touched there. The two-tower model without
HGNN is `two_tower.fit` with `use_hgnn=False`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from models.recommender import (FeatureFrames, VectorRecommender, consumed_pairs, embedding_table, mean_by_user,
                                positions)


def popularity(frames: FeatureFrames, candidates: pl.Series, target_type: str,
               periods: Sequence[str] = ("train",)) -> VectorRecommender:
    """Same list for every user in user_stats: candidates by distinct listeners (played) over `periods`.

    As a dot product: every user is the vector (1,), every item (listeners,). Ties keep item_id order.
    """
    history = frames.history(periods)
    listeners = (history.filter(pl.col("is_played") & (pl.col("item_type") == target_type))
                 .group_by("item_id").agg(pl.col("user_id").n_unique().alias("listeners")))
    items = (candidates.cast(pl.String).unique().sort().to_frame("item_id")
             .join(listeners, on="item_id", how="left", maintain_order="left").fill_null(0))
    users = frames.user_stats["user_id"].cast(pl.String)
    return VectorRecommender(
        users, torch.ones(users.len(), 1),
        items["item_id"], items["listeners"].cast(pl.Float32).to_torch().unsqueeze(1),
        consumed_pairs(history, target_type),
    )


def mean_embedding_knn(frames: FeatureFrames, embeddings: pl.DataFrame, candidates: pl.Series, target_type: str,
                       periods: Sequence[str] = ("train",), use_weak_signals: bool = True) -> VectorRecommender:
    """User = mean embedding of their target-type items over `periods` (streams and weak signals); KNN by dot product.

    With text embeddings this is the paper's LLM-KNN, with HGNN embeddings its 'HGNN alone'. Users
    without a target-type item in the history get no vector and therefore no list (cold users).
    """
    item_ids, table = embedding_table(embeddings, "item_id")
    history = frames.history(periods, use_weak_signals)
    mine = history.filter(pl.col("item_type") == target_type)
    users = mine["user_id"].cast(pl.String).unique().sort()
    means, counts = mean_by_user(mine, users, item_ids, table)
    known = counts > 0  # a user whose items all lack an embedding has nothing to average
    allowed = positions(candidates.cast(pl.String).unique().sort(), "item_id").join(
        positions(item_ids, "item_id").rename({"row": "src"}), on="item_id", maintain_order="left")
    return VectorRecommender(
        users.filter(pl.Series(known.numpy())), means[known],
        allowed["item_id"], table[allowed["src"].to_torch()],
        consumed_pairs(history, target_type),
    )


@dataclass(frozen=True)
class AlsConfig:
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 1.0  # confidence = 1 + alpha * log1p(events); larger values overfit small worlds
    iterations: int = 15
    seed: int = 0


def als(frames: FeatureFrames, candidates: pl.Series, target_type: str, item_types: Sequence[str],
        config: AlsConfig = AlsConfig(), periods: Sequence[str] = ("train",)) -> VectorRecommender:
    """Implicit-feedback ALS (Hu et al. 2008, `implicit`) on the user x item matrix of `item_types` and the target.

    Users with any such interaction get a vector (cold users through their podcasts); only candidates
    that appear in the matrix can be recommended, since ALS has no factors for items nobody touched.
    """
    history = frames.history(periods)
    rows = (history.filter(pl.col("item_type").is_in(list({*item_types, target_type})))
            .group_by("user_id", "item_id").agg(pl.col("count_events").sum()))
    users = rows["user_id"].cast(pl.String).unique().sort()
    items = rows["item_id"].cast(pl.String).unique().sort()
    index = (rows.join(positions(users, "user_id").rename({"row": "u"}), on="user_id")
             .join(positions(items, "item_id").rename({"row": "i"}), on="item_id"))
    weights = np.log1p(index["count_events"].to_numpy().astype(np.float32))
    matrix = sp.csr_matrix((weights, (index["u"].to_numpy(), index["i"].to_numpy())),
                           shape=(users.len(), items.len()), dtype=np.float32)  # (U, I)
    with threadpool_limits(1, "blas"):  # implicit runs its own threads; nested BLAS threads slow it down
        model = AlternatingLeastSquares(factors=config.factors, regularization=config.regularization,
                                        alpha=config.alpha, iterations=config.iterations, random_state=config.seed)
        model.fit(matrix, show_progress=False)
    allowed = positions(candidates.cast(pl.String).unique().sort(), "item_id").join(
        positions(items, "item_id").rename({"row": "src"}), on="item_id", maintain_order="left")
    item_factors = torch.from_numpy(np.asarray(model.item_factors, dtype=np.float32))
    return VectorRecommender(
        users, torch.from_numpy(np.asarray(model.user_factors, dtype=np.float32)),
        allowed["item_id"], item_factors[allowed["src"].to_torch()],
        consumed_pairs(history, target_type),
    )
