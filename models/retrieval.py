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

from models.torch_threads import torch_threads

CHUNK_SCORES = 2**25  # default chunk: 128 MiB of float32 scores per worker, at most 512 users
GROUPS_PER_K = 4  # the threshold is the K-th largest of 4K group maxima: tight, and cheap to find


@dataclass(frozen=True)
class TopKChunk:
    """Top-K items of the users `user_start .. user_start + len(items) - 1`.

    `items[r, j]` is the item row (index into the full item matrix) ranked j + 1 for user
    `user_start + r`, -1 where the user has fewer than K eligible items left; `scores` holds the
    inner products, -inf in those slots. Scores descend along a row; among equal scores the lower
    item index ranks first, also at the K-th place, so results are deterministic.
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
    chunk_users: int | None = None,
    block_items: int | None = None,
    threads: int | None = None,
) -> Iterator[TopKChunk]:
    """Yield, chunk by chunk of users and in user order, each user's K items of largest inner product.

    Exact: every score is computed (float32 matmul), nothing is approximated. Memory grows with
    `threads x chunk_users x n_items`, never with the number of users. `exclude_indptr` /
    `exclude_indices` are a CSR matrix over user rows listing items a user must not get (already
    consumed); `item_mask` (bool, one per item) marks the items anyone may get. K is capped at the
    number of eligible items. Only blocks of items whose best score can reach a user's top K are
    ranked (see `_Plan.chunk`); the result is exactly the first K of the items sorted by score
    descending, then by item index ascending, as a stable sort of the full score row would give.

    `threads` (default: torch's intra-op thread count) workers each take whole chunks with one
    torch thread, which beats splitting every small op across cores; torch's thread count is 1
    while the generator runs and is restored when it finishes or is closed.
    """
    user_mat, item_mat = _as_matrix(users, "users"), _as_matrix(items, "items")
    if user_mat.shape[1] != item_mat.shape[1]:
        raise ValueError(
            f"users and items need the same dimension (got {user_mat.shape[1]} and {item_mat.shape[1]})"
        )
    threads = threads or torch.get_num_threads()
    chunk_users = chunk_users or min(512, max(16, CHUNK_SCORES // max(1, item_mat.shape[0])))
    if k < 1 or chunk_users < 1 or threads < 1:
        raise ValueError(f"k, chunk_users and threads must be at least 1 (got {k}, {chunk_users}, {threads})")
    eligible = _check_mask(item_mask, item_mat.shape[0])
    exclusions = _check_exclusions(exclude_indptr, exclude_indices, user_mat.shape[0], item_mat.shape[0])
    plan = _Plan.build(user_mat, item_mat, k, eligible, exclusions, chunk_users, block_items)
    starts = range(0, user_mat.shape[0], chunk_users)
    if threads == 1:
        buffer = plan.buffer()
        for start in starts:
            yield plan.chunk(start, buffer)
        return
    local = threading.local()

    def work(start: int) -> TopKChunk:
        if not hasattr(local, "buffer"):
            local.buffer = plan.buffer()  # one per worker, reused: RSS stays flat
        return plan.chunk(start, local.buffer)

    pool = ThreadPoolExecutor(threads)
    with torch_threads(1):  # one torch thread per worker: the workers are the parallelism
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


@dataclass(frozen=True)
class _Plan:
    """What every chunk shares: padded item matrix, K, block layout, exclusions."""

    users: torch.Tensor  # (n_users, d)
    item_t: torch.Tensor  # (d, n_cols): eligible items, zero-padded to whole groups of blocks
    n_items: int  # eligible items; columns from here on are padding
    n_cols: int  # n_items padded to whole groups of blocks
    k: int
    block: int  # items per block
    group: int  # blocks per group; the threshold comes from group maxima
    chunk_users: int
    exclusions: tuple[np.ndarray, np.ndarray] | None
    position: torch.Tensor | None  # item row -> column, -1 when ineligible
    original: torch.Tensor | None  # column -> item row

    @classmethod
    def build(
        cls,
        users: torch.Tensor,
        items: torch.Tensor,
        k: int,
        eligible: np.ndarray | None,
        exclusions: tuple[np.ndarray, np.ndarray] | None,
        chunk_users: int,
        block_items: int | None,
    ) -> "_Plan":
        position = original = None
        if eligible is not None:
            original = torch.from_numpy(np.flatnonzero(eligible))
            position = torch.full((items.shape[0],), -1, dtype=torch.int64)
            position[original] = torch.arange(original.numel())
            items = items[original]
        n_items = items.shape[0]
        if n_items == 0:
            raise ValueError("item_mask leaves no eligible item; mark at least one item True")
        if not torch.isfinite(items).all():
            bad = int(torch.nonzero(~torch.isfinite(items).all(1))[0, 0])
            bad = bad if original is None else int(original[bad])
            raise ValueError(f"items row {bad} has a non-finite value; fix the item vectors")
        k = min(k, n_items)
        # 32 floats reduce well in one vector pass; blocks only pay off with many more blocks than K,
        # and the threshold needs at least K blocks.
        block = min(block_items or (32 if n_items >= 32 * 2 * k else 1), n_items // k)
        group = max(1, math.ceil(n_items / block) // (GROUPS_PER_K * k))
        n_cols = math.ceil(n_items / (block * group)) * block * group
        padded = torch.zeros(n_cols, items.shape[1])
        padded[:n_items] = items
        return cls(users, padded.t(), n_items, n_cols, k, block, group, chunk_users, exclusions,
                   position, original)

    def buffer(self) -> torch.Tensor:
        return torch.empty(min(self.chunk_users, self.users.shape[0]), self.n_cols)

    def chunk(self, start: int, buffer: torch.Tensor) -> TopKChunk:
        stop = min(start + self.chunk_users, self.users.shape[0])
        c, chunk = stop - start, self.users[start:stop]
        if not torch.isfinite(chunk).all():
            bad = start + int(torch.nonzero(~torch.isfinite(chunk).all(1))[0, 0])
            raise ValueError(f"users row {bad} has a non-finite value; fix the user vectors")
        scores = torch.mm(chunk, self.item_t, out=buffer[:c])  # (c, n_cols)
        scores[:, self.n_items :] = -math.inf  # padding columns
        if self.exclusions is not None:
            scores.view(-1)[self._consumed(start, stop)] = -math.inf
        n_blocks = self.n_cols // self.block
        block_max = scores.view(c, n_blocks, self.block).amax(2)  # (c, n_blocks)
        threshold = self._threshold(block_max)  # (c,): each user's K-th best score is at least this
        # Every item scoring at least the threshold sits in a block whose maximum does.
        rows, blocks = (block_max >= threshold[:, None]).nonzero(as_tuple=True)
        candidates = scores.view(-1, self.block).index_select(0, rows * n_blocks + blocks)  # (n, block)
        picked, offset = (candidates >= threshold[rows, None]).nonzero(as_tuple=True)
        return self._rank(start, c, rows[picked], blocks[picked] * self.block + offset,
                          candidates[picked, offset])

    def _threshold(self, block_max: torch.Tensor) -> torch.Tensor:
        """Per user, a score that at least K items reach, so the top K all score at least that.

        The K-th largest of group maxima qualifies: they are K distinct items' scores.
        """
        c, n_blocks = block_max.shape
        # Group g holds blocks g, g + n_groups, ...: a max over rows, which vectorises.
        group_max = block_max.view(c, self.group, n_blocks // self.group).amax(1)
        kth = torch.topk(group_max, self.k, dim=1, sorted=False).values.amin(1)
        # Never below the lowest float: -inf scores (consumed, padding) must not become candidates.
        return kth.clamp_(min=torch.finfo(torch.float32).min)

    def _rank(self, start: int, c: int, rows: torch.Tensor, cols: torch.Tensor,
              values: torch.Tensor) -> TopKChunk:
        """Top K per user of candidates given in (user, item) order: score descending, ties by item."""
        bits = (values + 0.0).view(torch.int32).long()  # + 0.0 turns -0.0 into 0.0
        ascending = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # integers ordered like the floats
        order = torch.sort(rows * 2**33 + (2**31 - 1 - ascending), stable=True).indices
        if not order.numel():  # every user of the chunk consumed every eligible item
            return TopKChunk(start, np.full((c, self.k), -1), np.full((c, self.k), -np.inf, dtype=np.float32))
        counts = torch.bincount(rows, minlength=c)
        rank = torch.arange(self.k)
        filled = rank < counts[:, None]  # (c, k)
        take = order[torch.where(filled, (torch.cumsum(counts, 0) - counts)[:, None] + rank, 0)]
        top_items = torch.where(filled, cols[take], -1)
        if self.original is not None:
            top_items = torch.where(filled, self.original[top_items.clamp(min=0)], -1)
        top_scores = torch.where(filled, values[take], -math.inf)
        return TopKChunk(start, top_items.numpy(), top_scores.numpy())

    def _consumed(self, start: int, stop: int) -> torch.Tensor:
        """Offsets into the flat (c, n_cols) scores of items the users start..stop consumed."""
        indptr, indices = self.exclusions
        counts = torch.from_numpy(np.diff(indptr[start : stop + 1]).astype(np.int64))
        cols = torch.from_numpy(indices[indptr[start] : indptr[stop]].astype(np.int64))
        rows = torch.repeat_interleave(torch.arange(stop - start), counts)
        if self.position is not None:
            # Exclusions of ineligible items are moot: those columns were dropped with the items.
            cols = self.position[cols]
            rows, cols = rows[cols >= 0], cols[cols >= 0]
        return rows * self.n_cols + cols


def top_k_rows(scores: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k columns of each row of a dense score matrix, best first, ties by column order: the first k of a
    stable argsort of -scores, without sorting whole rows. Returns (columns, scores), each (rows, min(k, C))."""
    scores = torch.as_tensor(scores, dtype=torch.float32)
    k = min(k, scores.shape[1])
    if k == 0 or scores.shape[0] == 0:
        return np.zeros((scores.shape[0], k), dtype=np.int64), np.zeros((scores.shape[0], k), dtype=np.float32)
    kth = torch.topk(scores, k, dim=1, sorted=False).values.amin(1, keepdim=True)  # (R, 1) k-th largest
    above = scores > kth
    ties = scores == kth
    # of the columns tied at the k-th score, the lowest ones fill the places the higher scores leave
    room = k - above.sum(1, keepdim=True)
    chosen = above | (ties & (torch.cumsum(ties, 1) <= room))  # exactly k per row
    cols = chosen.nonzero()[:, 1].view(-1, k)  # ascending within a row
    values = torch.gather(scores, 1, cols)
    order = torch.sort(-values, dim=1, stable=True).indices  # descending score, ties keep column order
    return torch.gather(cols, 1, order).numpy(), torch.gather(values, 1, order).numpy()


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


def _as_matrix(values: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    matrix = torch.as_tensor(values, dtype=torch.float32)
    if matrix.dim() != 2:
        raise ValueError(f"{name} must be a 2-d matrix (rows, dim) (got shape {tuple(matrix.shape)})")
    return matrix.contiguous()


def _check_mask(item_mask: np.ndarray | None, n_items: int) -> np.ndarray | None:
    if item_mask is None:
        return None
    mask = np.asarray(item_mask)
    if mask.dtype != np.bool_ or mask.shape != (n_items,):
        raise ValueError(
            f"item_mask must be a bool array with one entry per item ({n_items}) "
            f"(got dtype {mask.dtype}, shape {mask.shape})"
        )
    return mask


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
