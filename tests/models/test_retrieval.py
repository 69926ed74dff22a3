"""Exact top-K retrieval: brute-force agreement, exclusions, masks, streaming, ties, frames."""
from collections.abc import Iterable
from pathlib import Path
import inspect

import numpy as np
import polars as pl
import pytest
import torch

from models.retrieval import TopKChunk, candidates_frame, top_k_items, top_k_rows


def _world(n_users: int, n_items: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n_users, dim), dtype=np.float32),
        rng.standard_normal((n_items, dim), dtype=np.float32),
    )


def _consumed(n_users: int, n_items: int, most: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of distinct consumed items per user; counts vary from 0 to `most`."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, most + 1, n_users)
    picks = np.argsort(rng.random((n_users, n_items)), axis=1)
    indices = np.concatenate([picks[u, : counts[u]] for u in range(n_users)])
    return np.concatenate([[0], np.cumsum(counts)]), indices


def _brute_force(
    users: np.ndarray,
    items: np.ndarray,
    k: int,
    indptr: np.ndarray | None = None,
    indices: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Each user's ranked eligible, unconsumed items, in float64, at most k."""
    scores = users.astype(np.float64) @ items.astype(np.float64).T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    if indptr is not None:
        rows = np.repeat(np.arange(users.shape[0]), np.diff(indptr))
        scores[rows, indices] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [row[np.isfinite(scores[u, row])] for u, row in enumerate(order)]


def _collect(chunks: Iterable[TopKChunk]) -> tuple[np.ndarray, np.ndarray]:
    chunks = list(chunks)
    return np.concatenate([c.items for c in chunks]), np.concatenate([c.scores for c in chunks])


@pytest.mark.parametrize("chunk_users", [1, 7, 64, 500])
@pytest.mark.parametrize("block_items", [None, 1, 40])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_brute_force_with_exclusions_and_mask(
    chunk_users: int, block_items: int | None, threads: int
) -> None:
    users, items = _world(150, 3000, 16, seed=1)
    indptr, indices = _consumed(150, 3000, most=400, seed=2)
    mask = np.random.default_rng(3).random(3000) > 0.2
    got_items, got_scores = _collect(
        top_k_items(users, items, 25, exclude_indptr=indptr, exclude_indices=indices,
                    item_mask=mask, chunk_users=chunk_users, block_items=block_items, threads=threads)
    )
    expected = _brute_force(users, items, 25, indptr, indices, mask)
    assert got_items.shape == (150, 25)
    for u, want in enumerate(expected):
        np.testing.assert_array_equal(got_items[u], want)
        np.testing.assert_allclose(got_scores[u], users[u] @ items[want].T, rtol=1e-5, atol=1e-5)


def test_excluded_and_masked_items_never_returned() -> None:
    users, items = _world(40, 2000, 8, seed=4)
    # Everyone would otherwise pick item 0 and item 1 first.
    items[0], items[1] = users.mean(0) * 100, users.mean(0) * 99
    mask = np.ones(2000, dtype=bool)
    mask[0] = False
    indptr, indices = np.arange(41), np.ones(40, dtype=np.int64)
    got_items, _ = _collect(
        top_k_items(users, items, 10, exclude_indptr=indptr, exclude_indices=indices, item_mask=mask)
    )
    assert not np.isin(got_items, [0, 1]).any()


def test_k_beyond_remaining_items_pads_with_minus_one() -> None:
    users, items = _world(3, 20, 4, seed=5)
    mask = np.arange(20) < 15  # 15 eligible
    indptr = np.array([0, 10, 10, 35])  # user 0 consumed 10 eligible, user 2 consumed all 20 + 5 repeats
    indices = np.concatenate([np.arange(10), np.arange(20), np.arange(5)])
    got_items, got_scores = _collect(
        top_k_items(users, items, 50, exclude_indptr=indptr, exclude_indices=indices, item_mask=mask)
    )
    assert got_items.shape == (3, 15)  # K is capped at the eligible items
    np.testing.assert_array_equal(np.sort(got_items[0, :5]), np.arange(10, 15))
    assert (got_items[0, 5:] == -1).all() and np.isneginf(got_scores[0, 5:]).all()
    np.testing.assert_array_equal(np.sort(got_items[1]), np.arange(15))
    assert (got_items[2] == -1).all()


def test_streams_one_chunk_at_a_time() -> None:
    users, items = _world(100, 500, 8, seed=6)
    users[90, 3] = np.nan  # only the last chunk can see this row
    chunks = top_k_items(users, items, 5, chunk_users=30)
    assert inspect.isgenerator(chunks)
    first = next(chunks)
    assert (first.user_start, first.items.shape, first.scores.shape) == (0, (30, 5), (30, 5))
    assert [c.user_start for c in [next(chunks), next(chunks)]] == [30, 60]
    with pytest.raises(ValueError, match="users row 90"):
        next(chunks)


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
    return int(line.split()[1])


def test_memory_grows_with_chunk_not_users() -> None:
    users, items = _world(50_000, 2000, 8, seed=7)
    if not _peak_rss_reset():
        pytest.skip("peak RSS cannot be reset here (/proc/self/clear_refs)")
    before = _status_kib("VmRSS")
    rows = sum(c.items.shape[0] for c in top_k_items(users, items, 10, chunk_users=1024))
    growth_mib = (_status_kib("VmHWM") - before) / 1024
    assert rows == 50_000
    # The full score matrix would be 50_000 * 2000 * 4 B = 381 MiB; a worker's chunk is 8 MiB.
    assert growth_mib < 64, f"peak RSS grew {growth_mib:.0f} MiB"


def test_ties_list_lower_item_first() -> None:
    users = np.array([[1.0, 0.0]], dtype=np.float32)
    # Scores: 2, 1, 2, 3, 1, 3, 0 -> ranked 3,5 (score 3), 0,2 (score 2), 1,4 (score 1).
    items = np.array([[2, 0], [1, 0], [2, 5], [3, 0], [1, 1], [3, 2], [0, 0]], dtype=np.float32)
    (chunk,) = top_k_items(users, items, 6)
    np.testing.assert_array_equal(chunk.items[0], [3, 5, 0, 2, 1, 4])
    np.testing.assert_array_equal(chunk.scores[0], [3, 3, 2, 2, 1, 1])


@pytest.mark.parametrize(("chunk_users", "block_items"), [(8, None), (8, 5), (64, 1), (200, 32)])
def test_ties_resolved_like_a_stable_sort(chunk_users: int, block_items: int | None) -> None:
    rng = np.random.default_rng(8)
    # Small integers make every score exact and ties common, also at the K-th place.
    users = rng.integers(-2, 3, (60, 4)).astype(np.float32)
    items = rng.integers(-2, 3, (4000, 4)).astype(np.float32)
    indptr, indices = _consumed(60, 4000, most=50, seed=9)
    got_items, _ = _collect(top_k_items(users, items, 30, exclude_indptr=indptr, exclude_indices=indices,
                                        chunk_users=chunk_users, block_items=block_items))
    np.testing.assert_array_equal(got_items, np.stack(_brute_force(users, items, 30, indptr, indices)))


def test_all_equal_items_give_the_first_k() -> None:
    users, _ = _world(5, 1, 8, seed=10)
    items = np.ones((5000, 8), dtype=np.float32)
    got_items, _ = _collect(top_k_items(users, items, 40))
    np.testing.assert_array_equal(got_items, np.tile(np.arange(40), (5, 1)))


def test_torch_threads_restored_after_iteration() -> None:
    users, items = _world(300, 500, 8, seed=11)
    before = torch.get_num_threads()
    chunks = top_k_items(users, items, 5, chunk_users=50, threads=2)
    next(chunks)
    chunks.close()  # stopped early
    assert torch.get_num_threads() == before
    list(top_k_items(users, items, 5, chunk_users=50, threads=2))
    assert torch.get_num_threads() == before


def test_candidates_frame_names_users_and_items() -> None:
    chunks = [
        TopKChunk(0, np.array([[2, 0], [1, -1]]), np.array([[0.9, 0.5], [0.7, -np.inf]], dtype=np.float32)),
        TopKChunk(2, np.array([[0, 1]]), np.array([[0.3, 0.2]], dtype=np.float32)),
    ]
    frame = candidates_frame(chunks, np.array(["u0", "u1", "u2"]), np.array([10, 20, 30]))
    assert frame.rows() == [
        ("u0", 30, 1, pytest.approx(0.9)),
        ("u0", 10, 2, pytest.approx(0.5)),
        ("u1", 20, 1, pytest.approx(0.7)),
        ("u2", 10, 1, pytest.approx(0.3)),
        ("u2", 20, 2, pytest.approx(0.2)),
    ]
    assert frame.schema["rank"] == pl.Int32 and frame.schema["score"] == pl.Float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exclude_indptr": np.array([0, 1, 2]), "exclude_indices": np.array([0, 99])}, "max 99"),
        ({"exclude_indptr": np.array([0, 1, 2])}, "both"),
        ({"item_mask": np.zeros(10, dtype=bool)}, "no eligible item"),
        ({"item_mask": np.ones(9, dtype=bool)}, r"shape \(9,\)"),
    ],
)
def test_bad_inputs_say_what_is_wrong(kwargs: dict, message: str) -> None:
    users, items = _world(2, 10, 4, seed=9)
    with pytest.raises(ValueError, match=message):
        next(top_k_items(users, items, 3, **kwargs))


@pytest.mark.parametrize("k", [1, 5, 12, 40])
def test_top_k_rows_is_the_head_of_a_stable_descending_argsort(k: int) -> None:
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 4, (30, 12)).astype(np.float32)  # many ties, also at the k-th place
    scores[rng.random(scores.shape) < 0.2] = -np.inf  # excluded items
    scores[3] = -np.inf  # a user who consumed everything
    scores[4] = 0.0
    cols, values = top_k_rows(scores, k)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(cols, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(scores, expected, axis=1))
    assert cols.shape == (30, min(k, 12))


def test_top_k_rows_of_an_empty_matrix() -> None:
    cols, values = top_k_rows(np.zeros((0, 5), dtype=np.float32), 3)
    assert cols.shape == values.shape == (0, 3)
