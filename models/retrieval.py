"""Exact top-K inner-product retrieval of items for every user, streamed in chunks of users."""
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
import math
import threading

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
    chunk_users: int = 64,
    block_items: int | None = None,
    threads: int | None = None,
) -> Iterator[TopKChunk]:
    """Yield, chunk by chunk of users and in user order, each user's K items of largest inner product.

    Exact: every score is computed (float32 matmul), nothing is approximated. Memory grows with
    `threads x chunk_users x n_items`, never with the number of users. `exclude_indptr` /
    `exclude_indices` are a CSR matrix over user rows listing items a user must not get (already
    consumed); `item_mask` (bool, one per item) marks the items anyone may get. K is capped at the
    number of eligible items. Selection prunes with block maxima (see `_select`), staying exact.

    `threads` (default: torch's intra-op thread count) workers each take whole chunks with one
    torch thread, which beats splitting every small op across cores; torch's thread count is 1
    while the generator runs and is restored when it finishes or is closed.
    """
    user_mat = _as_matrix(users, "users")
    item_mat = _as_matrix(items, "items")
    if user_mat.shape[1] != item_mat.shape[1]:
        raise ValueError(
            f"users and items need the same dimension (got {user_mat.shape[1]} and {item_mat.shape[1]})"
        )
    threads = threads or torch.get_num_threads()
    if k < 1 or chunk_users < 1 or threads < 1:
        raise ValueError(f"k, chunk_users and threads must be at least 1 (got {k}, {chunk_users}, {threads})")
    eligible, position = _eligible(item_mask, item_mat.shape[0])
    exclusions = _check_exclusions(exclude_indptr, exclude_indices, user_mat.shape[0], item_mat.shape[0])
    plan = _Plan.build(user_mat, item_mat, k, eligible, position, exclusions, chunk_users, block_items)
    starts = range(0, user_mat.shape[0], chunk_users)
    if threads == 1:
        buffer = plan.buffer()
        for start in starts:
            yield plan.chunk(start, buffer)
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    local = threading.local()

    def work(start: int) -> TopKChunk:
        if not hasattr(local, "buffer"):
            local.buffer = plan.buffer()  # one per worker, reused: RSS stays flat
        return plan.chunk(start, local.buffer)

    pool = ThreadPoolExecutor(threads)
    try:
        pending: deque[Future[TopKChunk]] = deque()
        for start in starts:
            pending.append(pool.submit(work, start))
            if len(pending) > threads:  # a bounded look-ahead keeps memory bounded
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class _Plan:
    """What every chunk shares: padded item matrix, K, block layout, exclusions."""

    users: torch.Tensor  # (n_users, d)
    item_t: torch.Tensor  # (d, n_cols): eligible items, zero-padded to whole blocks
    n_items: int  # eligible items; columns past it are padding
    k: int
    n_blocks: int  # 0: no pruning, plain topk over the row
    chunk_users: int
    exclusions: tuple[np.ndarray, np.ndarray] | None
    position: np.ndarray | None  # item row -> column, -1 when ineligible
    original: torch.Tensor | None  # column -> item row

    @classmethod
    def build(
        cls,
        users: torch.Tensor,
        items: torch.Tensor,
        k: int,
        eligible: np.ndarray | None,
        position: np.ndarray | None,
        exclusions: tuple[np.ndarray, np.ndarray] | None,
        chunk_users: int,
        block_items: int | None,
    ) -> "_Plan":
        if eligible is not None:
            items = items[torch.from_numpy(eligible)]
        n_items = items.shape[0]
        if n_items == 0:
            raise ValueError("item_mask leaves no eligible item; mark at least one item True")
        k = min(k, n_items)
        block = block_items or max(1, round(math.sqrt(n_items / k)))
        # Blocks pay off only when the k best blocks hold far fewer items than the row.
        prune = k * block * 2 <= n_items
        n_blocks = math.ceil(n_items / block) if prune else 0
        n_cols = n_blocks * block if prune else n_items
        padded = torch.zeros(n_cols, items.shape[1])
        padded[:n_items] = items
        original = torch.from_numpy(eligible) if eligible is not None else None
        return cls(users, padded.t(), n_items, k, n_blocks, chunk_users, exclusions, position, original)

    def buffer(self) -> torch.Tensor:
        return torch.empty(min(self.chunk_users, self.users.shape[0]), self.item_t.shape[1])

    def chunk(self, start: int, buffer: torch.Tensor) -> TopKChunk:
        stop = min(start + self.chunk_users, self.users.shape[0])
        chunk = self.users[start:stop]
        if not torch.isfinite(chunk).all():
            bad = start + int(torch.nonzero(~torch.isfinite(chunk).all(1))[0, 0])
            raise ValueError(f"users row {bad} has a non-finite value; fix the user vectors")
        scores = torch.mm(chunk, self.item_t, out=buffer[: stop - start])  # (c, n_cols)
        scores[:, self.n_items :] = -math.inf
        if self.exclusions is not None:
            _mask_consumed(scores, self.exclusions, start, stop, self.position)
        top_scores, top_items = _order_ties(*_select(scores, self.k, self.n_blocks))
        if self.original is not None:
            top_items = self.original[top_items]
        top_items[torch.isneginf(top_scores)] = -1
        return TopKChunk(start, top_items.numpy(), top_scores.numpy())


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
    strided = scores.view(c, n // n_blocks, n_blocks)  # (c, block, n_blocks)
    block_max = strided.amax(dim=1)  # (c, n_blocks)
    best_blocks = torch.topk(block_max, k, dim=1, sorted=False).indices  # (c, k)
    candidates = strided.gather(2, best_blocks.unsqueeze(1).expand(c, n // n_blocks, k))  # (c, block, k)
    values, picked = torch.topk(candidates.view(c, -1), k, dim=1)  # picked = row_in_block * k + j
    items = best_blocks.gather(1, picked % k) + (picked // k) * n_blocks
    return values, items


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
