"""Exact top-K inner-product retrieval of items for every user, streamed in chunks of users."""
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
import math

import numpy as np
import polars as pl
import torch


@dataclass(frozen=True)
class TopKChunk:
    """Top-K items of the users `user_start .. user_start + len(items) - 1`.

    `items[r, j]` is the item row (index into the full item matrix) ranked j + 1 for user
    `user_start + r`, -1 where the user has fewer than K eligible items left; `scores` holds the
    inner products, -inf in those slots. Scores descend along a row; equal scores list the lower
    item index first.
    """

    user_start: int
    items: np.ndarray  # (chunk, K) int64
    scores: np.ndarray  # (chunk, K) float32


def top_k_items(
    users: np.ndarray | torch.Tensor,
    items: np.ndarray | torch.Tensor,
    k: int,
    *,
    exclude_indptr: np.ndarray | None = None,
    exclude_indices: np.ndarray | None = None,
    item_mask: np.ndarray | None = None,
    chunk_users: int = 128,
    block_items: int | None = None,
) -> Iterator[TopKChunk]:
    """Yield, chunk by chunk of users, each user's K items of largest inner product.

    Exact: every score is computed (float32 matmul), nothing is approximated. Memory grows with
    `chunk_users x n_items`, never with the number of users. `exclude_indptr`/`exclude_indices`
    are a CSR matrix over user rows listing items a user must not get (already consumed);
    `item_mask` (bool, one per item) marks the items anyone may get. K is capped at the number
    of eligible items. Selection prunes with block maxima (see `_select`), which keeps it exact.
    """
    user_mat = _as_matrix(users, "users")
    item_mat = _as_matrix(items, "items")
    if user_mat.shape[1] != item_mat.shape[1]:
        raise ValueError(
            f"users and items need the same dimension (got {user_mat.shape[1]} and {item_mat.shape[1]})"
        )
    if k < 1 or chunk_users < 1:
        raise ValueError(f"k and chunk_users must be at least 1 (got k={k}, chunk_users={chunk_users})")
    n_users, n_all = user_mat.shape[0], item_mat.shape[0]
    eligible, position = _eligible(item_mask, n_all)
    if eligible is not None:
        item_mat = item_mat[torch.from_numpy(eligible)]
    n_items = item_mat.shape[0]
    if n_items == 0:
        raise ValueError("item_mask leaves no eligible item; mark at least one item True")
    exclusions = _check_exclusions(exclude_indptr, exclude_indices, n_users, n_all)
    k_eff = min(k, n_items)
    block = block_items or max(1, round(math.sqrt(n_items / k_eff)))
    # Blocks pay off only when the k best blocks hold far fewer items than the row.
    prune = k_eff * block * 2 <= n_items
    n_blocks = math.ceil(n_items / block) if prune else 1
    n_cols = n_blocks * block if prune else n_items
    # Zero rows pad the items to whole blocks; their columns are set to -inf after each matmul.
    item_t = torch.zeros(n_cols, item_mat.shape[1]).index_copy_(
        0, torch.arange(n_items), item_mat
    ).t()  # (d, n_cols)
    buffer = torch.empty(min(chunk_users, n_users), n_cols)  # reused: RSS stays flat
    original = torch.from_numpy(eligible) if eligible is not None else None
    for start in range(0, n_users, chunk_users):
        stop = min(start + chunk_users, n_users)
        chunk = user_mat[start:stop]
        if not torch.isfinite(chunk).all():
            bad = start + int(torch.nonzero(~torch.isfinite(chunk).all(1))[0, 0])
            raise ValueError(f"users row {bad} has a non-finite value; fix the user vectors")
        scores = torch.mm(chunk, item_t, out=buffer[: stop - start])  # (c, n_cols)
        scores[:, n_items:] = -math.inf
        if exclusions is not None:
            _mask_consumed(scores, exclusions, start, stop, position)
        top_scores, top_items = _select(scores, k_eff, n_blocks if prune else 0)
        top_scores, top_items = _order_ties(top_scores, top_items)
        if original is not None:
            top_items = original[top_items]
        top_items[torch.isneginf(top_scores)] = -1
        yield TopKChunk(start, top_items.numpy(), top_scores.numpy())


def candidates_frame(
    chunks: Iterable[TopKChunk], user_ids: np.ndarray | pl.Series, item_ids: np.ndarray | pl.Series
) -> pl.DataFrame:
    """One row per (user, ranked item): `user_id`, `item_id`, `rank` (1..K), `score`.

    `user_ids[i]` / `item_ids[j]` name user row i and item row j; empty slots (-1) are dropped.
    """
    users, items = pl.Series(user_ids), pl.Series(item_ids)
    frames = []
    for chunk in chunks:
        rows, cols = np.nonzero(chunk.items >= 0)
        frames.append(
            pl.DataFrame({
                "user_id": users.gather(chunk.user_start + rows),
                "item_id": items.gather(chunk.items[rows, cols]),
                "rank": pl.Series(cols + 1, dtype=pl.Int32),
                "score": chunk.scores[rows, cols],
            })
        )
    if not frames:
        return pl.DataFrame(
            schema={"user_id": users.dtype, "item_id": items.dtype, "rank": pl.Int32, "score": pl.Float32}
        )
    return pl.concat(frames)


def _select(scores: torch.Tensor, k: int, n_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k per row of (c, n) scores, best first.

    Column j belongs to block j % n_blocks. Each top-k item lies in one of the k blocks with the
    largest maxima: were its block outside them, k other blocks would each hold an item scoring
    above it. So only k * block_size scores per row reach the final topk, and the block maxima
    are an elementwise max over contiguous slices, which streams at memory speed.
    """
    if n_blocks == 0:
        return torch.topk(scores, k, dim=1)
    c, n = scores.shape
    block_max = scores.view(c, n // n_blocks, n_blocks).amax(dim=1)  # (c, n_blocks)
    best_blocks = torch.topk(block_max, k, dim=1, sorted=False).indices  # (c, k)
    offsets = torch.arange(0, n, n_blocks)  # (block,)
    cols = (best_blocks.unsqueeze(2) + offsets).view(c, -1)  # (c, k * block)
    values, picked = torch.topk(scores.gather(1, cols), k, dim=1)
    return values, cols.gather(1, picked)


def _order_ties(values: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort rows by score descending, equal scores by ascending item index (topk leaves ties unordered)."""
    by_item = torch.argsort(items, dim=1)
    values, items = values.gather(1, by_item), items.gather(1, by_item)
    by_score = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, by_score), items.gather(1, by_score)


def _mask_consumed(
    scores: torch.Tensor,
    exclusions: tuple[np.ndarray, np.ndarray],
    start: int,
    stop: int,
    position: np.ndarray | None,
) -> None:
    """Set the scores of items each user of rows start..stop already consumed to -inf."""
    indptr, indices = exclusions
    counts = torch.from_numpy(np.diff(indptr[start : stop + 1]).astype(np.int64))
    cols = torch.from_numpy(indices[indptr[start] : indptr[stop]].astype(np.int64))
    rows = torch.repeat_interleave(torch.arange(stop - start), counts)
    if position is not None:
        # Exclusions of ineligible items are moot: those columns were dropped with the items.
        cols = torch.from_numpy(position)[cols]
        keep = cols >= 0
        rows, cols = rows[keep], cols[keep]
    scores[rows, cols] = -math.inf


def _as_matrix(values: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    matrix = torch.as_tensor(values, dtype=torch.float32)
    if matrix.dim() != 2:
        raise ValueError(f"{name} must be a 2-d matrix (rows, dim) (got shape {tuple(matrix.shape)})")
    if name == "items" and not torch.isfinite(matrix).all():
        bad = int(torch.nonzero(~torch.isfinite(matrix).all(1))[0, 0])
        raise ValueError(f"items row {bad} has a non-finite value; fix the item vectors")
    return matrix.contiguous()


def _eligible(item_mask: np.ndarray | None, n_items: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Eligible item rows, and each item's column among them (-1 when ineligible)."""
    if item_mask is None:
        return None, None
    mask = np.asarray(item_mask)
    if mask.dtype != np.bool_ or mask.shape != (n_items,):
        raise ValueError(
            f"item_mask must be a bool array with one entry per item ({n_items}) "
            f"(got dtype {mask.dtype}, shape {mask.shape})"
        )
    eligible = np.flatnonzero(mask)
    position = np.full(n_items, -1, dtype=np.int64)
    position[eligible] = np.arange(eligible.size)
    return eligible, position


def _check_exclusions(
    indptr: np.ndarray | None, indices: np.ndarray | None, n_users: int, n_items: int
) -> tuple[np.ndarray, np.ndarray] | None:
    if indptr is None and indices is None:
        return None
    if indptr is None or indices is None:
        raise ValueError("pass both exclude_indptr and exclude_indices (a CSR matrix over users), or neither")
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    if indptr.shape != (n_users + 1,) or indptr[0] != 0 or indptr[-1] != indices.size or np.any(np.diff(indptr) < 0):
        raise ValueError(
            f"exclude_indptr must rise from 0 to len(exclude_indices)={indices.size} over {n_users + 1} "
            f"entries (got shape {indptr.shape}, first {indptr[:1]}, last {indptr[-1:]})"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= n_items):
        raise ValueError(
            f"exclude_indices must be item rows in 0..{n_items - 1} "
            f"(got min {indices.min()}, max {indices.max()})"
        )
    return indptr, indices
