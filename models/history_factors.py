"""Closed-form co-listening factors for the two towers: EASE's weights onto the label items, cut to rank r.

EASE (models.baselines.ease) scores user u and candidate c by x_u B[:, c], x_u the user's binary history
over every item type and B its item-item weights. Cut to its r leading singular vectors, B ~ U_r S_r V_r^T,
that score is the dot product of a user factor, the sum of U_r S_r rows over the user's distinct items,
and an item factor, the item's row of V_r. The two towers carry both beside their own outputs, so the
dot product they are trained with starts from what the closed form learns of cross-type co-listening and
the towers learn what it misses (bench/README.md, "low_rank.py", shows rank 128 keeps EASE's lists).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from models.baselines import dense_gram, ease_weights
from models.recommender import positions
from models.tower_inputs import aligned_rows

RMS_USERS = 50_000  # users whose label scores _label_rms holds at once


@dataclass(frozen=True)
class HistoryFactors:
    history_items: pl.Series  # (n,) items whose presence in a history counts
    user_side: torch.Tensor  # (n, r) U_r S_r rows, scaled: a user's factor sums the rows of their items
    label_items: pl.Series  # (m,) items with an item factor
    item_side: torch.Tensor  # (m, r) V_r rows

    @staticmethod
    def fit(history: pl.DataFrame, label_items: pl.Series, rank: int, regularization: float,
            max_items: int, seed: int = 0) -> HistoryFactors:
        """EASE on `history`'s binary user x item matrix (the `max_items` items most users touched), its
        columns of `label_items` cut to `rank` by a seeded randomised SVD. The scale puts the factor
        scores of the history's own label pairs at a root mean square of one."""
        if rank < 1 or regularization <= 0 or max_items < 1:
            raise ValueError(f"history factors need rank >= 1, regularization > 0 and max_items >= 1 "
                             f"(got {rank}, {regularization}, {max_items})")
        pairs, items, labels, solved = label_weights(history, label_items, regularization, max_items)
        weights = torch.from_numpy(solved)
        r = min(rank, *weights.shape)
        if r == 0:  # no label item among the history's items: nothing to factor
            return HistoryFactors(items, torch.zeros(items.len(), 0), labels["item_id"], torch.zeros(labels.height, 0))
        with torch.random.fork_rng():  # seeded, leaving the caller's generator where it was
            torch.manual_seed(seed)
            left, values, right = torch.svd_lowrank(weights, q=min(r + 10, *weights.shape), niter=4)
        user_side = left[:, :r] * values[:r]  # (n, r)
        item_side = right[:, :r].contiguous()  # (m, r)
        label_ids = labels["item_id"]
        rms = _label_rms(pairs, items, user_side, label_ids, item_side)
        return HistoryFactors(items, user_side / rms if rms > 0 else user_side, label_ids, item_side)

    @property
    def rank(self) -> int:
        return self.item_side.shape[1]

    def users(self, user_ids: pl.Series, history: pl.DataFrame) -> torch.Tensor:
        """(U, r): per user, the sum of the user-side rows of their distinct history items; zeros without any."""
        return _sums(history, user_ids, self.history_items, self.user_side)

    def items(self, item_ids: pl.Series) -> torch.Tensor:
        """(I, r): each item's factor, zeros for an item outside the fitted label items."""
        return aligned_rows(item_ids, (self.label_items, self.item_side), self.rank)[0]

    def to_dict(self) -> dict[str, object]:
        return {"history_items": self.history_items.to_list(), "user_side": self.user_side,
                "label_items": self.label_items.to_list(), "item_side": self.item_side}

    @staticmethod
    def from_dict(saved: dict[str, object]) -> HistoryFactors:
        return HistoryFactors(pl.Series(saved["history_items"], dtype=pl.String), saved["user_side"],
                              pl.Series(saved["label_items"], dtype=pl.String), saved["item_side"])


def label_weights(history: pl.DataFrame, label_items: pl.Series, regularization: float, max_items: int
                  ) -> tuple[pl.DataFrame, pl.Series, pl.DataFrame, np.ndarray]:
    """EASE on `history`'s binary user x item matrix over the `max_items` items most users touched, solved for
    the columns of `label_items` among them: the distinct (user_id, item_id) pairs, the items (sorted), the
    label items' rows among them (item_id, src) and the (items, labels) weights."""
    pairs = history.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).unique()
    reach = pairs.group_by("item_id").len().sort(["len", "item_id"], descending=[True, False]).head(max_items)
    items = reach["item_id"].sort()
    matrix = _binary(pairs, pairs["user_id"].unique().sort(), items)
    labels = (positions(label_items.cast(pl.String).unique().sort(), "item_id")
              .join(positions(items, "item_id").rename({"row": "src"}), on="item_id", maintain_order="left"))
    return pairs, items, labels, ease_weights(dense_gram(matrix), regularization, labels["src"].to_numpy())


def _label_rms(pairs: pl.DataFrame, items: pl.Series, user_side: torch.Tensor, label_ids: pl.Series,
               item_side: torch.Tensor) -> float:
    """Root mean square of the factor scores x_u U S v_i over the distinct (user, label item) `pairs`, summed
    RMS_USERS users at a time: at 1M users the factors and gathered rows of all at once took 4 GB."""
    labelled = pairs.join(positions(label_ids, "item_id").rename({"row": "v"}), on="item_id")
    if labelled.height == 0:
        return 0.0
    users = labelled["user_id"].unique().sort()
    pairs, labelled = pairs.sort("user_id"), labelled.sort("user_id")  # a chunk of users is then a slice of rows
    squares = 0.0
    for start in range(0, users.len(), RMS_USERS):
        chunk = users.slice(start, RMS_USERS)
        factors = _sums(_rows_of(pairs, chunk), chunk, items, user_side)
        rows = (_rows_of(labelled, chunk).join(positions(chunk, "user_id").rename({"row": "u"}), on="user_id")
                .sort("u", "v"))
        scores = (factors[rows["u"].to_torch()] * item_side[rows["v"].to_torch()]).sum(1)  # (rows,)
        squares += float(scores.double().pow(2).sum())
    return math.sqrt(squares / labelled.height)


def _rows_of(rows: pl.DataFrame, users: pl.Series) -> pl.DataFrame:
    """The rows of `rows` (sorted by user_id) from the first to the last of `users` (sorted): a slice, no copy."""
    column = rows["user_id"]
    start = int(column.search_sorted(users[0], side="left"))
    return rows.slice(start, int(column.search_sorted(users[-1], side="right")) - start)


def _sums(pairs: pl.DataFrame, user_ids: pl.Series, item_ids: pl.Series, table: torch.Tensor) -> torch.Tensor:
    """(U, r): per user of `user_ids`, the sum of `table` rows (rows of `item_ids`) over their distinct items
    in `pairs`, as one sparse product: no (pairs, r) gather."""
    product = _binary(pairs, user_ids, item_ids) @ table.numpy()
    return torch.from_numpy(np.ascontiguousarray(product, dtype=np.float32))


def _binary(pairs: pl.DataFrame, user_ids: pl.Series, item_ids: pl.Series) -> sp.csr_matrix:
    """(U, I) float32 ones where a user of `user_ids` touched an item of `item_ids` in `pairs`."""
    index = (pairs.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).unique()
             .join(positions(user_ids.cast(pl.String), "user_id").rename({"row": "u"}), on="user_id")
             .join(positions(item_ids.cast(pl.String), "item_id").rename({"row": "i"}), on="item_id")
             .sort("u", "i"))  # joins return rows in any order: a fixed one keeps seeded runs bit-for-bit equal
    ones = np.ones(index.height, dtype=np.float32)
    return sp.csr_matrix((ones, (index["u"].to_numpy(), index["i"].to_numpy())), shape=(user_ids.len(), item_ids.len()))
