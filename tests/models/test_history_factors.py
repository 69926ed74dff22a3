"""History factors: EASE's weights onto the label items, cut to a rank, as a user factor and an item factor."""
import numpy as np
import polars as pl
import pytest
import torch

from models import baselines, history_factors
from models.history_factors import HistoryFactors


@pytest.fixture(scope="module")
def history(world) -> pl.DataFrame:
    return world.frames.history(["train"])


@pytest.fixture(scope="module")
def audiobooks(world) -> pl.Series:
    return world.frames.items.filter(pl.col("item_type") == "audiobook")["item_id"].sort()


def test_full_rank_factors_score_as_ease(world, history, audiobooks) -> None:
    ease = baselines.ease(world.frames, audiobooks, "audiobook", baselines.EaseConfig(regularization=50.0))
    rank = ease.item_ids.len()
    factors = HistoryFactors.fit(history, audiobooks, rank, 50.0, 20_000)
    users = ease.user_ids.head(40)
    ours = factors.users(users, history) @ factors.items(ease.item_ids).T  # (40, C)
    theirs = torch.from_numpy(np.asarray(ease.user_rows[:40] @ ease.weights))  # (40, C)
    scale = float((ours * theirs).sum() / (theirs * theirs).sum())  # the fit rescales by one positive number
    assert scale > 0
    assert torch.allclose(ours, scale * theirs, atol=1e-3 * float(ours.abs().max()))


def test_a_low_rank_is_the_best_approximation_of_that_rank(history, audiobooks) -> None:
    full = HistoryFactors.fit(history, audiobooks, 10_000, 50.0, 20_000)
    cut = HistoryFactors.fit(history, audiobooks, 4, 50.0, 20_000)
    assert cut.rank == 4 and cut.user_side.shape == (cut.history_items.len(), 4)
    assert torch.allclose(cut.item_side.T @ cut.item_side, torch.eye(4), atol=1e-4)  # orthonormal item factors
    weights = (full.user_side @ full.item_side.T).double()  # EASE's B up to the fit's scale
    left, values, right = torch.linalg.svd(weights, full_matrices=False)
    best = (left[:, :4] * values[:4]) @ right[:4]  # Eckart-Young: the closest rank-4 matrix
    ours = (cut.user_side @ cut.item_side.T).double()
    cosine = torch.nn.functional.cosine_similarity(best.flatten(), ours.flatten(), dim=0)
    assert cosine > 0.999


def test_unknown_users_and_items_read_zeros(history, audiobooks) -> None:
    factors = HistoryFactors.fit(history, audiobooks, 8, 50.0, 20_000)
    assert torch.equal(factors.users(pl.Series(["nobody"]), history), torch.zeros(1, 8))
    assert torch.equal(factors.items(pl.Series(["no-such-item"])), torch.zeros(1, 8))
    known = factors.items(audiobooks.head(3))
    assert known.abs().sum() > 0


def test_no_label_item_in_the_history_gives_rank_zero(history) -> None:
    factors = HistoryFactors.fit(history, pl.Series(["no-such-item"]), 8, 50.0, 20_000)
    assert factors.rank == 0
    assert factors.users(history["user_id"].head(2), history).shape == (2, 0)


def test_round_trip(history, audiobooks) -> None:
    factors = HistoryFactors.fit(history, audiobooks, 8, 50.0, 20_000)
    again = HistoryFactors.from_dict(factors.to_dict())
    assert again.history_items.equals(factors.history_items) and torch.equal(again.item_side, factors.item_side)


def test_bad_settings_are_refused(history, audiobooks) -> None:
    with pytest.raises(ValueError, match="rank >= 1"):
        HistoryFactors.fit(history, audiobooks, 0, 50.0, 20_000)


def test_the_order_of_the_history_rows_changes_no_bit(history, audiobooks) -> None:
    shuffled = history.sample(fraction=1.0, shuffle=True, seed=1)
    first, second = (HistoryFactors.fit(h, audiobooks, 8, 50.0, 20_000) for h in (history, shuffled))
    assert torch.equal(first.user_side, second.user_side) and torch.equal(first.item_side, second.item_side)
    users = history["user_id"].unique().sort()
    assert torch.equal(first.users(users, history), first.users(users, shuffled))


def test_the_scale_reads_every_label_pair_once_in_any_chunking(history, audiobooks, monkeypatch) -> None:
    whole = HistoryFactors.fit(history, audiobooks, 8, 50.0, 20_000)
    monkeypatch.setattr(history_factors, "RMS_USERS", 7)  # many chunks, the last a partial one
    chunked = HistoryFactors.fit(history, audiobooks, 8, 50.0, 20_000)
    assert torch.allclose(chunked.user_side, whole.user_side, rtol=1e-5)
    pairs = history.select("user_id", "item_id").unique().filter(pl.col("item_id").is_in(audiobooks.implode()))
    scores = (chunked.users(pairs["user_id"], history) * chunked.items(pairs["item_id"])).sum(1)
    assert float(scores.double().pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-4)  # unit rms on the labels
