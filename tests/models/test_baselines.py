"""Baselines: popularity order, ALS on a planted block structure, mean-embedding KNN and who it serves."""
import numpy as np
import polars as pl
import pytest

from models import baselines

BOOKS = {f"a{j}": "audiobook" for j in range(4)}


@pytest.fixture(scope="module")
def listened(frames_from):
    # Listeners in the train period: a0 by 3 users, a2 by 2, a1 by 1, a3 by nobody (only a holdout play).
    events = [("train", u, "a0", "play") for u in ("u1", "u2", "u3")]
    events += [("train", u, "a2", "play") for u in ("u1", "u2")]
    events += [("train", "u3", "a1", "play"), ("train", "u1", "a1", "preview"), ("holdout", "u4", "a3", "play")]
    events += [("train", "u4", "a3", "preview")]  # a preview is no listen
    return frames_from(events, BOOKS, users=["u1", "u2", "u3", "u4", "u5"])


def test_popularity_ranks_by_listeners(listened) -> None:
    recommender = baselines.popularity(listened, pl.Series(list(BOOKS)), "audiobook")
    lists = recommender.recommend(["u5"], k=4)
    assert lists["item_id"].to_list() == ["a0", "a2", "a1", "a3"]
    assert lists["score"].to_list() == [3.0, 2.0, 1.0, 0.0]


def test_popularity_leaves_out_what_the_user_touched(listened) -> None:
    recommender = baselines.popularity(listened, pl.Series(list(BOOKS)), "audiobook")
    assert recommender.recommend(["u3"], k=4)["item_id"].to_list() == ["a2", "a3"]
    assert recommender.recommend(["u3"], k=4, exclude_consumed=False)["item_id"].to_list() == ["a0", "a2", "a1", "a3"]


def test_popularity_reads_only_the_periods_asked_for(listened) -> None:
    recommender = baselines.popularity(listened, pl.Series(list(BOOKS)), "audiobook", periods=("holdout",))
    assert recommender.recommend(["u5"], k=1)["item_id"].to_list() == ["a3"]


def test_als_recovers_a_planted_block_structure(frames_from) -> None:
    # 4 blocks of 8 books and 12 users; each user played every book of their block but one (withheld).
    rng = np.random.default_rng(0)
    events, withheld = [], {}
    for block in range(4):
        for u in range(12):
            user = f"u{block}_{u:02d}"
            skip = int(rng.integers(8))
            withheld[user] = f"a{block}_{skip}"
            events += [("train", user, f"a{block}_{j}", "play") for j in range(8) if j != skip]
    items = {f"a{b}_{j}": "audiobook" for b in range(4) for j in range(8)}
    frames = frames_from(events, items)
    recommender = baselines.als(frames, pl.Series(list(items)), "audiobook", ("podcast", "audiobook"),
                                baselines.AlsConfig(factors=8))
    top = recommender.recommend(list(withheld), k=1)
    hits = top.filter(pl.col("item_id") == pl.col("user_id").replace_strict(withheld))
    assert hits.height == len(withheld)


def test_als_serves_users_through_their_podcasts(frames_from) -> None:
    events = [("train", "warm", "p0", "play"), ("train", "warm", "a0", "play"), ("train", "cold", "p0", "play")]
    frames = frames_from(events, {"p0": "podcast", "a0": "audiobook", "a1": "audiobook"})
    recommender = baselines.als(frames, pl.Series(["a0", "a1"]), "audiobook", ("podcast", "audiobook"),
                                baselines.AlsConfig(factors=2))
    lists = recommender.recommend(["cold"], k=5)
    assert lists["item_id"].to_list() == ["a0"]  # a1 has no factors: nobody touched it


@pytest.fixture(scope="module")
def knn_frames(frames_from):
    events = [("train", "warm", "a0", "play"), ("train", "weak", "a1", "follow"), ("train", "cold", "p0", "play")]
    return frames_from(events, {"a0": "audiobook", "a1": "audiobook", "a2": "audiobook", "a3": "audiobook",
                                "p0": "podcast"})


EMBEDDINGS = pl.DataFrame({
    "item_id": ["a0", "a1", "a2", "a3", "p0"],
    "embedding": [[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [1.0, 0.0]],
})


def test_mean_embedding_knn_ranks_nearest_items_first(knn_frames) -> None:
    recommender = baselines.mean_embedding_knn(knn_frames, EMBEDDINGS, pl.Series(["a0", "a1", "a2", "a3"]), "audiobook")
    assert recommender.recommend(["warm"], k=3)["item_id"].to_list() == ["a2", "a3", "a1"]


def test_mean_embedding_knn_counts_weak_signals_unless_told_not_to(knn_frames) -> None:
    candidates = pl.Series(["a0", "a1", "a2", "a3"])
    with_weak = baselines.mean_embedding_knn(knn_frames, EMBEDDINGS, candidates, "audiobook")
    without = baselines.mean_embedding_knn(knn_frames, EMBEDDINGS, candidates, "audiobook", use_weak_signals=False)
    assert with_weak.recommend(["weak"], k=1)["item_id"].to_list() == ["a3"]
    assert without.recommend(["weak"], k=1).height == 0


def test_mean_embedding_knn_gives_cold_users_no_list(knn_frames) -> None:
    recommender = baselines.mean_embedding_knn(knn_frames, EMBEDDINGS, pl.Series(["a0", "a1"]), "audiobook")
    assert recommender.recommend(["cold", "nobody"], k=5).height == 0
