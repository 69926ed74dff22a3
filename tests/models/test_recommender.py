"""Feature frames, pooled histories and the shared ranking surface."""
from datetime import date

import polars as pl
import pytest
import torch

from models.recommender import VectorRecommender, embedding_table, mean_by_user


def test_released_keeps_items_released_before_the_moment(world) -> None:
    released = world.frames.released("audiobook", world.frames.cut())
    assert released.len() == 8 * 15  # the 3 new books per community come out three days after the cut
    assert not released.str.contains("_n").any()


def test_history_without_weak_signals_keeps_played_items_only(frames_from) -> None:
    frames = frames_from([("train", "u", "a0", "preview"), ("train", "u", "a1", "play"),
                          ("train", "u", "a1", "follow")], {"a0": "audiobook", "a1": "audiobook"})
    history = frames.history(["train"], use_weak_signals=False)
    assert history["item_id"].to_list() == ["a1"]
    assert not history["is_followed"].any()


def test_history_rejects_unknown_periods(world) -> None:
    with pytest.raises(ValueError, match="periods"):
        world.frames.history(["later"])


def test_embedding_table_rejects_mixed_dimensions() -> None:
    frame = pl.DataFrame({"item_id": ["a", "b"], "embedding": [[1.0, 0.0], [1.0]]})
    with pytest.raises(ValueError, match="differ in length"):
        embedding_table(frame, "item_id")


def test_mean_by_user_averages_and_leaves_zeros_without_items() -> None:
    pairs = pl.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "missing"]})
    means, counts = mean_by_user(pairs, pl.Series(["u1", "u2", "u3"]), pl.Series(["a", "b"]),
                                 torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert means.tolist() == [[0.5, 0.5], [0.0, 0.0], [0.0, 0.0]]
    assert counts.tolist() == [2.0, 0.0, 0.0]


@pytest.fixture()
def recommender() -> VectorRecommender:
    return VectorRecommender(
        user_ids=pl.Series(["u1", "u2"]), user_vectors=torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        item_ids=pl.Series(["a", "b", "c"]), item_vectors=torch.tensor([[3.0, 0.0], [2.0, 1.0], [0.0, 2.0]]),
        consumed=pl.DataFrame({"user_id": ["u1"], "item_id": ["a"]}),
    )


def test_recommend_ranks_by_dot_product_and_leaves_out_consumed(recommender) -> None:
    lists = recommender.recommend(["u1", "u2"], k=2)
    assert lists.rows() == [("u1", "b", 1, 2.0), ("u1", "c", 2, 0.0), ("u2", "c", 1, 2.0), ("u2", "b", 2, 1.0)]


def test_recommend_can_keep_consumed_items(recommender) -> None:
    assert recommender.recommend(["u1"], k=1, exclude_consumed=False)["item_id"].to_list() == ["a"]


def test_users_without_a_vector_get_no_rows(recommender) -> None:
    lists = recommender.recommend(["stranger"], k=3)
    assert lists.height == 0
    assert lists.schema == pl.Schema({"user_id": pl.String, "item_id": pl.String, "rank": pl.Int32,
                                      "score": pl.Float32})


def test_a_user_who_consumed_everything_gets_what_is_left(recommender) -> None:
    everything = VectorRecommender(recommender.user_ids, recommender.user_vectors, recommender.item_ids,
                                   recommender.item_vectors,
                                   pl.DataFrame({"user_id": ["u2"] * 3, "item_id": ["a", "b", "c"]}))
    assert everything.recommend(["u2"], k=3).height == 0


def test_release_dates_may_be_unknown(frames_from) -> None:
    frames = frames_from([("train", "u", "a0", "play")], {"a0": "audiobook", "a1": "audiobook"})
    items = frames.items.with_columns(release_date=pl.Series([None, date(2030, 1, 1)], dtype=pl.Date))
    assert type(frames)(frames.interactions, frames.user_stats, frames.item_stats, items,
                        frames.splits).released("audiobook", frames.cut()).to_list() == ["a0"]
