"""The baselines: popularity, mean-embedding KNN (LLM-KNN, HGNN alone), ALS, item-based KNN and EASE.

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
from scipy.linalg import lapack
import torch
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from models.recommender import (RECOMMENDATION_SCHEMA, FeatureFrames, VectorRecommender, consumed_pairs,
                                embedding_table, mean_by_user, positions, topic_table, topic_vocabulary)
from models.retrieval import top_k_rows

# Weight of the topic part in LLM-KNN's item vectors: an item is [text | w * topics / |topics|] / sqrt(1 + w^2),
# so two items sharing every topic gain w^2 / (1 + w^2) = 0.2 of cosine over what their texts give.
TOPIC_WEIGHT = 0.5


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
                       periods: Sequence[str] = ("train",), use_weak_signals: bool = True,
                       topics: pl.DataFrame | None = None, topic_weight: float = TOPIC_WEIGHT) -> VectorRecommender:
    """User = mean embedding of their target-type items over `periods` (streams and weak signals); KNN by dot product.

    With text embeddings this is the paper's LLM-KNN, with HGNN embeddings its 'HGNN alone'. Users
    without a target-type item in the history get no vector and therefore no list (cold users).
    With `topics` (item_id, topics), as LLM-KNN reads FeatureFrames.item_topics, each item vector is
    [embedding | topic_weight * multi-hot / |multi-hot|] / sqrt(1 + topic_weight^2) over the topics of
    the target-type items (unit length for unit embeddings; an item without topics keeps its embedding,
    scaled alike), so items sharing a user's topics rank higher among items of similar text.
    """
    item_ids, table = embedding_table(embeddings, "item_id")
    if topics is not None:
        targets = frames.items.filter(pl.col("item_type") == target_type)["item_id"]
        table = _with_topics(item_ids, table, topics, topic_vocabulary(topics, targets, len(targets)), topic_weight)
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


def _with_topics(item_ids: pl.Series, table: torch.Tensor, topics: pl.DataFrame, vocabulary: list[str],
                 weight: float) -> torch.Tensor:
    """(n, d + T) rows of `table` with the scaled unit topic multi-hot of each item appended (see mean_embedding_knn)."""
    topic_ids, hot = topic_table(topics, vocabulary)  # (m, T)
    found = positions(item_ids, "item_id").join(positions(topic_ids, "item_id").rename({"row": "src"}), on="item_id")
    extra = torch.zeros(item_ids.len(), len(vocabulary))  # (n, T)
    extra[found["row"].to_torch()] = hot[found["src"].to_torch()]
    extra = weight * extra / extra.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return torch.cat([table, extra], dim=1) / (1 + weight**2) ** 0.5


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


@dataclass(frozen=True)
class ScoreRecommender:
    """Ranks items by user rows x an item-item weight matrix, chunk by chunk: the KNN and EASE surface.

    Same `recommend` as VectorRecommender (schema, ties by item order, consumed items left out), but the
    user side stays a sparse (U, I) matrix, so memory grows with a chunk of users, never with U x I.
    A user without a row gets no list.
    """

    user_ids: pl.Series  # (U,)
    user_rows: sp.csr_matrix  # (U, I) the users' history over the model's items
    item_ids: pl.Series  # (C,) only the items this model may recommend
    weights: sp.csr_matrix | np.ndarray  # (I, C) score of candidate c per unit of history item i
    consumed: pl.DataFrame  # (user_id, item_id) left out of a user's list when exclude_consumed
    chunk_users: int = 1024

    def recommend(self, user_ids: Sequence[str] | pl.Series, k: int, exclude_consumed: bool = True) -> pl.DataFrame:
        """Top-k (user_id, item_id, rank 1..k, score) per requested user that has a row, best first."""
        wanted = pl.DataFrame({"user_id": pl.Series(list(user_ids), dtype=pl.String)}).unique(maintain_order=True)
        rows = wanted.join(positions(self.user_ids, "user_id"), on="user_id", maintain_order="left")
        if rows.height == 0 or self.item_ids.len() == 0:
            return pl.DataFrame(schema=RECOMMENDATION_SCHEMA)
        excluded = (self.consumed.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
                    .unique().join(positions(rows["user_id"], "user_id").rename({"row": "u"}), on="user_id")
                    .join(positions(self.item_ids, "item_id").rename({"row": "i"}), on="item_id"))
        drop_u, drop_i = excluded["u"].to_numpy(), excluded["i"].to_numpy()
        k = min(k, self.item_ids.len())
        frames = []
        for start in range(0, rows.height, self.chunk_users):
            stop = min(start + self.chunk_users, rows.height)
            product = self.user_rows[rows["row"].to_numpy()[start:stop]] @ self.weights
            scores = np.asarray(product.toarray() if sp.issparse(product) else product, dtype=np.float32)  # (R, C)
            if exclude_consumed:
                mine = (drop_u >= start) & (drop_u < stop)
                scores[drop_u[mine] - start, drop_i[mine]] = -np.inf
            order, top = top_k_rows(scores, k)  # ties keep item order
            keep = np.isfinite(top)
            users = np.repeat(np.arange(start, stop), k).reshape(-1, k)
            ranks = np.tile(np.arange(1, k + 1), stop - start).reshape(-1, k)
            frames.append(pl.DataFrame({
                "user_id": rows["user_id"].gather(users[keep]), "item_id": self.item_ids.gather(order[keep]),
                "rank": ranks[keep], "score": top[keep]}))
        return pl.concat(frames).cast(RECOMMENDATION_SCHEMA)  # type: ignore[arg-type]


def history_matrix(frames: FeatureFrames, periods: Sequence[str], item_types: Sequence[str] | None = None
                   ) -> tuple[pl.Series, pl.Series, sp.csr_matrix]:
    """Users, items and the (U, I) matrix of log1p(events) over `periods` (a weak signal alone counts as one event)."""
    history = frames.history(periods)
    if item_types is not None:
        history = history.filter(pl.col("item_type").is_in(list(item_types)))
    rows = history.group_by("user_id", "item_id").agg(pl.col("count_events").sum())
    users = rows["user_id"].cast(pl.String).unique().sort()
    items = rows["item_id"].cast(pl.String).unique().sort()
    index = (rows.join(positions(users, "user_id").rename({"row": "u"}), on="user_id")
             .join(positions(items, "item_id").rename({"row": "i"}), on="item_id"))
    weights = np.log1p(np.maximum(index["count_events"].fill_null(0).to_numpy(), 1)).astype(np.float32)
    matrix = sp.csr_matrix((weights, (index["u"].to_numpy(), index["i"].to_numpy())),
                           shape=(users.len(), items.len()), dtype=np.float32)
    return users, items, matrix


def _candidate_columns(candidates: pl.Series, items: pl.Series) -> pl.DataFrame:
    """(item_id, src): the candidates that have a column in the history matrix, in item_id order."""
    return positions(candidates.cast(pl.String).unique().sort(), "item_id").join(
        positions(items, "item_id").rename({"row": "src"}), on="item_id", maintain_order="left")


@dataclass(frozen=True)
class ItemKnnConfig:
    neighbours: int = 100  # most similar history items kept per candidate: bounds memory at I x C x 100
    weighted: bool = True  # a history item counts log1p(events); False: every touched item counts 1


def item_knn(frames: FeatureFrames, candidates: pl.Series, target_type: str,
             config: ItemKnnConfig = ItemKnnConfig(), periods: Sequence[str] = ("train",)) -> ScoreRecommender:
    """Item-based KNN: cosine on who touched what, over every item type, so podcasts and music reach audiobooks.

    sim(i, c) = |users(i) & users(c)| / sqrt(|users(i)| |users(c)|), i != c, keeping each candidate's
    `neighbours` largest; score(u, c) = sum over u's history items i of weight(u, i) x sim(i, c).
    Users with any interaction in `periods` get a list; candidates nobody touched cannot be recommended.
    """
    if config.neighbours < 1:
        raise ValueError(f"ItemKnnConfig.neighbours must be at least 1 (got {config.neighbours})")
    users, items, matrix = history_matrix(frames, periods)
    allowed = _candidate_columns(candidates, items)
    binary = matrix.copy()
    binary.data[:] = 1.0
    norms = np.sqrt(np.asarray(binary.sum(axis=0)).ravel())  # (I,)
    cols = allowed["src"].to_numpy()
    sims = (binary.T @ binary[:, cols]).tocoo()  # (I, C) co-consumption counts
    values = sims.data / (norms[sims.row] * norms[cols[sims.col]])
    keep = sims.row != cols[sims.col]  # an item is not its own neighbour
    row, col, values = sims.row[keep], sims.col[keep], values[keep]
    order = np.lexsort((row, -values, col))  # per candidate: most similar first, ties by item order
    row, col, values = row[order], col[order], values[order]
    rank = np.arange(len(col)) - np.searchsorted(col, col)  # position within the candidate's neighbours
    near = rank < config.neighbours
    weights = sp.csr_matrix((values[near].astype(np.float32), (row[near], col[near])), shape=(items.len(), len(cols)))
    if not config.weighted:
        matrix = binary
    return ScoreRecommender(users, matrix, allowed["item_id"], weights,
                            consumed_pairs(frames.history(periods), target_type))


@dataclass(frozen=True)
class EaseConfig:
    # L2 penalty lambda of EASE; 500 is the order Steck (2019) found best on MovieLens-20M and Netflix.
    regularization: float = 500.0
    # Items kept, most users first: EASE inverts a dense I x I matrix (20,000 items: 3.2 GB in float64).
    max_items: int = 20_000


def dense_gram(matrix: sp.csr_matrix, pairs_per_block: int = 1 << 25) -> np.ndarray:
    """X^T X of a sparse (U, I) matrix as a dense float32 (I, I), summed over blocks of users.

    The sparse product of all users at once holds every co-occurring item pair (at 1M users over 20,000
    items, hundreds of millions of 12-byte entries beside the dense result); a block of users whose rows
    make at most `pairs_per_block` pairs keeps that to a few hundred MB.
    """
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    out = np.zeros((matrix.shape[1], matrix.shape[1]), dtype=np.float32)
    pairs = np.cumsum(np.diff(matrix.indptr).astype(np.int64) ** 2)  # pairs made by users 0..u
    start = 0
    while start < matrix.shape[0]:
        done = pairs[start - 1] if start else 0
        stop = max(int(np.searchsorted(pairs, done + pairs_per_block, side="right")), start + 1)
        block = matrix[start:stop]
        product = (block.T.tocsr() @ block).tocoo()  # canonical: each (row, col) once
        out[product.row, product.col] += product.data
        start = stop
    return out


def ease_weights(gram: np.ndarray, regularization: float, columns: np.ndarray | None = None) -> np.ndarray:
    """B = I - P / diag(P) with P = (G + lambda I)^-1, zero diagonal, in float32, overwriting `gram`.

    G + lambda I is symmetric positive definite, so P comes from its Cholesky factor (LAPACK potrf, potri):
    a third of the work of a general inverse, in single precision and in place. At 20,000 items this takes
    one 1.6 GB matrix instead of three 3.2 GB ones; the rankings agree with the float64 inverse.
    With `columns` (item positions), only those columns of B, (I, len(columns)): P's columns come from
    the factor by potrs against the unit vectors, which for a fifth of the items is a third of potri's time.
    """
    # LAPACK works in place on Fortran order; G is symmetric, so its transpose is such a view of the same numbers
    matrix = np.ascontiguousarray(gram, dtype=np.float32).T
    if matrix.shape[0] == 0:
        return matrix if columns is None else np.zeros((0, len(columns)), dtype=np.float32)
    matrix[np.diag_indices_from(matrix)] += regularization
    factor, info = lapack.spotrf(matrix, lower=False, overwrite_a=True, clean=False)
    if info == 0 and columns is not None:
        return _ease_columns(factor, np.asarray(columns, dtype=np.int64))
    if info == 0:
        inverse, info = lapack.spotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: X^T X + {regularization} I is not positive definite (LAPACK info {info}); "
                                    "raise the regularization")
    n = inverse.shape[0]
    for start in range(0, n, 2048):  # potri fills the upper triangle: mirror it, a block of rows at a time
        stop = min(start + 2048, n)
        inverse[start:stop, :start] = inverse[:start, start:stop].T
        block = inverse[start:stop, start:stop]
        inverse[start:stop, start:stop] = np.triu(block) + np.triu(block, 1).T
    diagonal = np.diag(inverse).copy()
    inverse /= -diagonal  # column j divided by -P_jj
    inverse[np.diag_indices_from(inverse)] = 0.0
    return inverse


def _ease_columns(factor: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """B[:, columns] from the upper Cholesky factor U of G + lambda I (U^T U): P[:, j] solves U^T U p = e_j."""
    unit = np.zeros((factor.shape[0], len(columns)), dtype=np.float32, order="F")
    if len(columns) == 0:
        return unit
    own = (columns, np.arange(len(columns)))  # each column's own item: P_jj, then B_jj = 0
    unit[own] = 1.0
    solved, info = lapack.spotrs(factor, unit, lower=False, overwrite_b=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: solving for {len(columns)} columns failed (LAPACK info {info})")
    solved /= -solved[own]
    solved[own] = 0.0
    return solved


def ease(frames: FeatureFrames, candidates: pl.Series, target_type: str,
         config: EaseConfig = EaseConfig(), periods: Sequence[str] = ("train",)) -> ScoreRecommender:
    """EASE (Steck 2019) on the binary user x item matrix of every item type in `periods`.

    P = (X^T X + lambda I)^-1, B = I - P / diag(P) (column-wise, zero diagonal), scores = X B over the
    candidates. Items beyond `max_items` (fewest distinct users) are dropped before fitting; users left
    with no kept item get no list, and only kept candidates can be recommended.
    """
    if config.regularization <= 0 or config.max_items < 1:
        raise ValueError(f"EaseConfig needs regularization > 0 and max_items >= 1 (got {config})")
    users, items, matrix = history_matrix(frames, periods)
    binary = matrix.copy()
    binary.data[:] = 1.0
    if items.len() > config.max_items:
        popularity_order = np.lexsort((np.arange(items.len()), -np.asarray(binary.sum(axis=0)).ravel()))
        kept = np.sort(popularity_order[:config.max_items])
        binary, items = binary[:, kept], items.gather(kept)
        known = np.asarray(binary.sum(axis=1)).ravel() > 0
        binary, users = binary[known], users.filter(pl.Series(known))
    allowed = _candidate_columns(candidates, items)
    weights = np.ascontiguousarray(  # (I, C): only the candidates' columns of B are ever scored
        ease_weights(dense_gram(binary), config.regularization, allowed["src"].to_numpy()), dtype=np.float32)
    return ScoreRecommender(users, binary.tocsr(), allowed["item_id"], weights,
                            consumed_pairs(frames.history(periods), target_type))
