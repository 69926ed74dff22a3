"""Two-tower model on the planted world: cold users' audiobook taste follows their podcast taste."""
import math
from dataclasses import replace

import polars as pl
import pytest
import torch

from models import baselines, two_tower
from models.two_tower import TwoTowerConfig, TwoTowerModel
from tests.conftest import TYPES

CONFIG = TwoTowerConfig(**TYPES, epochs=10, batch_size=128, seed=0)


@pytest.fixture(scope="module")
def model(world) -> TwoTowerModel:
    return two_tower.fit(world.frames, CONFIG, text_embeddings=world.text, hgnn_embeddings=world.hgnn,
                         profile_embeddings=world.profile)


@pytest.fixture(scope="module")
def cold_users(world) -> pl.Series:
    return world.frames.user_stats.filter(~pl.col("is_warm"))["user_id"]


def community_share(lists: pl.DataFrame, communities: pl.DataFrame, k: int = 10) -> float:
    """Share of top-k items that belong to the user's own community (item ids carry it: a03_07)."""
    mine = (lists.filter(pl.col("rank") <= k).join(communities, on="user_id")
            .with_columns(item_community=pl.col("item_id").str.slice(1, 2).cast(pl.Int64)))
    return float((mine["item_community"] == mine["community"]).mean())


def test_split_labels_hides_labels_from_the_features(world) -> None:
    history = world.frames.history(["train"])
    seen, labels = two_tower.split_labels(history, CONFIG, seed=0)
    assert labels.join(seen, on=["user_id", "item_id"], how="semi").height == 0
    assert seen.height + labels.height == history.height


def test_split_labels_makes_cold_like_examples_at_the_configured_rate(world) -> None:
    history = world.frames.history(["train"])
    seen, labels = two_tower.split_labels(history, TwoTowerConfig(**TYPES, cold_example_rate=0.3, label_fraction=0.0), seed=0)
    kinds = labels.join(history.select("user_id", "item_id", "item_type"), on=["user_id", "item_id"])
    warm = kinds.filter(pl.col("item_type") == "audiobook")["user_id"].unique()
    still_warm = seen.filter(pl.col("item_type") == "audiobook")["user_id"].unique()
    cold_like = warm.len() - still_warm.len()
    assert warm.len() == 400  # every warm user yields at least one audiobook label
    assert 0.2 < cold_like / warm.len() < 0.4


def test_podcast_labels_come_from_every_podcast_listener_cold_ones_included(world) -> None:
    history = world.frames.history(["train"])
    _, labels = two_tower.split_labels(history, TwoTowerConfig(**TYPES, label_fraction=0.0), seed=0)
    podcast = history.filter(pl.col("item_type") == "podcast")
    labelled = labels.join(podcast, on=["user_id", "item_id"], how="semi")
    assert labelled["user_id"].n_unique() == podcast["user_id"].n_unique()  # at least one each
    assert labelled.height == podcast["user_id"].n_unique()  # and, with label_fraction 0, exactly one
    _, only_target = two_tower.split_labels(history, TwoTowerConfig(**TYPES, label_types=("audiobook",)), seed=0)
    assert only_target.join(podcast, on=["user_id", "item_id"], how="semi").height == 0


def test_training_loss_falls(model) -> None:
    assert model.losses[-1] < 0.8 * model.losses[0]


def test_cold_users_get_audiobooks_of_their_podcast_community(world, model, cold_users) -> None:
    candidates = world.frames.released("audiobook", world.frames.cut())
    lists = model.recommender(world.frames, candidates, world.text, world.hgnn, world.profile).recommend(cold_users, 10)
    popular = baselines.popularity(world.frames, candidates, "audiobook").recommend(cold_users, 10)
    assert community_share(lists, world.communities) > 0.8
    assert community_share(popular, world.communities) < 0.3  # 8 equal communities: about 1/8


def test_every_user_gets_a_finite_unit_vector(world, model) -> None:
    stranger = pl.DataFrame({"user_id": ["stranger"], "country": ["XX"], "age_bucket": [None]})
    frames = type(world.frames)(world.frames.interactions,
                                pl.concat([world.frames.user_stats, stranger], how="diagonal"),
                                world.frames.item_stats, world.frames.items, world.frames.splits)
    ids, vectors = model.user_vectors(frames, world.text, world.hgnn, world.profile)
    rank = model.dims["factor"]
    assert rank > 0 and ids.len() == 801 and vectors.shape == (801, 128 + rank)
    assert torch.isfinite(vectors).all()
    tower, factor = vectors[:, :128], vectors[:, 128:]  # the towers' unit vectors, then the history factor
    assert torch.allclose(tower.norm(dim=1), torch.ones(801), atol=1e-5)
    assert torch.equal(factor[ids.to_list().index("stranger")], torch.zeros(rank))  # no history, no factor


def test_the_history_factor_rides_beside_the_towers_with_its_learned_scale_and_weight(world, model) -> None:
    users = world.frames.user_stats["user_id"].head(30)
    _, vectors = model.user_vectors(world.frames, world.text, world.hgnn, world.profile, users)
    expected = model.net.factor_scale.detach() * model.factors.users(users, world.frames.history(CONFIG.periods))
    assert torch.allclose(vectors[:, 128:], expected, atol=1e-5)
    item_ids, items = model.item_vectors(world.frames, world.text, world.hgnn)
    assert torch.allclose(items[:, 128:], model.factors.items(item_ids))
    weighted = replace(model, config=replace(model.config, history_factor_weight=3.0))
    _, heavier = weighted.user_vectors(world.frames, world.text, world.hgnn, world.profile, users)
    assert torch.equal(heavier[:, :128], vectors[:, :128])  # the weight touches the factor's columns only
    assert torch.allclose(heavier[:, 128:], 3.0 * expected, atol=1e-5)
    assert torch.equal(weighted.item_vectors(world.frames, world.text, world.hgnn)[1], items)
    off = two_tower.fit(world.frames, replace(CONFIG, history_factor_rank=0, epochs=1), text_embeddings=world.text,
                        hgnn_embeddings=world.hgnn, profile_embeddings=world.profile)
    assert off.factors is None and off.net.factor_scale is None
    assert off.user_vectors(world.frames, world.text, world.hgnn, world.profile, users)[1].shape == (30, 128)


def test_user_vectors_built_a_chunk_at_a_time_equal_all_at_once(world, model, monkeypatch) -> None:
    whole_ids, whole = model.user_vectors(world.frames, world.text, world.hgnn, world.profile)
    monkeypatch.setattr(two_tower, "USER_CHUNK", 97)  # 800 users: 8 full chunks and a short one
    ids, chunked = model.user_vectors(world.frames, world.text, world.hgnn, world.profile)
    assert ids.equals(whole_ids) and torch.allclose(chunked, whole, atol=1e-6)
    some = whole_ids.gather([5, 400, 799, 0])
    ids, picked = model.user_vectors(world.frames, world.text, world.hgnn, world.profile, user_ids=some)
    assert ids.equals(some) and torch.allclose(picked, whole[[5, 400, 799, 0]], atol=1e-6)


def test_recommendations_leave_out_consumed_items(world, model) -> None:
    users = world.frames.user_stats["user_id"]
    candidates = world.frames.released("audiobook", world.frames.cut())
    lists = model.recommender(world.frames, candidates, world.text, world.hgnn, world.profile).recommend(users, 100)
    consumed = world.frames.history(["train"]).select("user_id", "item_id")
    assert lists.join(consumed, on=["user_id", "item_id"], how="semi").height == 0
    assert lists.filter(pl.col("item_id").str.contains("_n")).height == 0  # released after the cut


def test_recommender_for_some_users_gives_their_lists_and_no_others(world, model) -> None:
    users = world.frames.user_stats["user_id"]
    some = users.gather(list(range(0, users.len(), 3)))
    candidates = world.frames.released("audiobook", world.frames.cut())
    whole = model.recommender(world.frames, candidates, world.text, world.hgnn, world.profile).recommend(some, 20)
    picked = model.recommender(world.frames, candidates, world.text, world.hgnn, world.profile,
                               user_ids=some)
    assert picked.user_ids.len() == some.len()
    lists = picked.recommend(users, 20)
    assert set(lists["user_id"].to_list()) == set(some.to_list())
    assert lists.select("user_id", "item_id", "rank").equals(whole.select("user_id", "item_id", "rank"))


def test_save_and_load_give_the_same_vectors(world, model, tmp_path) -> None:
    model.save(tmp_path / "two_tower.pt")
    loaded = TwoTowerModel.load(tmp_path / "two_tower.pt")
    _, before = model.item_vectors(world.frames, world.text, world.hgnn)
    _, after = loaded.item_vectors(world.frames, world.text, world.hgnn)
    assert torch.equal(before, after)
    assert loaded.config == model.config


def test_item_id_embeddings_train_save_and_load(world, tmp_path) -> None:
    with_ids = two_tower.fit(world.frames, TwoTowerConfig(**TYPES, item_id_dim=8, epochs=1), text_embeddings=world.text,
                             hgnn_embeddings=world.hgnn)
    assert with_ids.net.item_id is not None and with_ids.net.item_id.weight.shape == (len(with_ids.vocab.history_item) + 1, 8)
    with_ids.save(tmp_path / "ids.pt")
    _, before = with_ids.item_vectors(world.frames, world.text, world.hgnn)
    _, after = TwoTowerModel.load(tmp_path / "ids.pt").item_vectors(world.frames, world.text, world.hgnn)
    assert torch.equal(before, after)


def test_seeded_training_repeats_exactly(world) -> None:
    short = TwoTowerConfig(**TYPES, epochs=2, seed=3)
    first, again = (two_tower.fit(world.frames, short, text_embeddings=world.text, hgnn_embeddings=world.hgnn,
                                  profile_embeddings=world.profile) for _ in range(2))
    assert again.losses == first.losses


def test_without_hgnn_the_model_needs_no_hgnn_embeddings(world) -> None:
    plain = two_tower.fit(world.frames, TwoTowerConfig(**TYPES, use_hgnn=False, epochs=1), text_embeddings=world.text)
    ids, vectors = plain.item_vectors(world.frames, world.text)
    assert vectors.shape == (ids.len(), 128 + plain.dims["factor"])


def test_hgnn_model_without_hgnn_embeddings_is_refused(world) -> None:
    with pytest.raises(ValueError, match="hgnn_embeddings"):
        two_tower.fit(world.frames, TwoTowerConfig(**TYPES, epochs=1), text_embeddings=world.text)


def test_embeddings_of_another_dimension_are_refused(world, model) -> None:
    wider = world.text.with_columns(pl.col("embedding").list.concat(pl.lit([0.0])))
    with pytest.raises(ValueError, match="dimension"):
        model.item_vectors(world.frames, wider, world.hgnn)


def test_an_epoch_trains_on_a_bounded_fresh_sample_of_users(world) -> None:
    history = world.frames.history(["train"])
    users = history["user_id"].unique().sort()
    sample = two_tower.sample_users(history, users, 10, seed=1)
    assert sample["user_id"].n_unique() == 10
    assert sample.equals(history.join(sample.select("user_id").unique(), on="user_id", how="semi"))  # whole histories
    assert two_tower.sample_users(history, users, 10, seed=1).equals(sample)
    assert set(two_tower.sample_users(history, users, 10, seed=2)["user_id"]) != set(sample["user_id"])
    assert two_tower.sample_users(history, users, 0, seed=1) is history  # 0: every user
    assert two_tower.sample_users(history, users, users.len(), seed=1) is history
    bounded = two_tower.fit(world.frames, TwoTowerConfig(**TYPES, epochs=3, max_users_per_epoch=20), text_embeddings=world.text,
                            hgnn_embeddings=world.hgnn)
    assert len(bounded.losses) == 3 and all(math.isfinite(loss) for loss in bounded.losses)
    with pytest.raises(ValueError, match="max_users_per_epoch must be >= 0"):
        two_tower.fit(world.frames, TwoTowerConfig(**TYPES, epochs=1, max_users_per_epoch=-1), text_embeddings=world.text,
                      hgnn_embeddings=world.hgnn)


def test_uniform_negatives_train_beside_the_in_batch_ones(world, cold_users) -> None:
    mixed = two_tower.fit(world.frames, replace(CONFIG, uniform_negatives=64), text_embeddings=world.text,
                          hgnn_embeddings=world.hgnn, profile_embeddings=world.profile)
    assert mixed.losses[-1] < 0.8 * mixed.losses[0]
    candidates = world.frames.released("audiobook", world.frames.cut())
    lists = mixed.recommender(world.frames, candidates, world.text, world.hgnn, world.profile).recommend(cold_users, 10)
    assert community_share(lists, world.communities) > 0.8


@pytest.fixture(scope="module")
def topic_frames(world):
    """The world with topics: every podcast and audiobook carries its community's topic, books also 'fiction'."""
    graph = world.frames.items.filter(pl.col("item_type").is_in(["podcast", "audiobook"]))
    topics = graph.select("item_id", topics=pl.concat_list(pl.format("topic {}", pl.col("item_id").str.slice(1, 2)),
                                                           pl.when(pl.col("item_type") == "audiobook")
                                                           .then(pl.lit("fiction")).otherwise(None)).list.drop_nulls())
    return replace(world.frames, item_topics=topics)


@pytest.fixture(scope="module")
def topic_models(world, topic_frames) -> dict[bool, TwoTowerModel]:
    return {flag: two_tower.fit(topic_frames, replace(CONFIG, epochs=2, use_topics=flag), text_embeddings=world.text,
                                hgnn_embeddings=world.hgnn, profile_embeddings=world.profile)
            for flag in (True, False)}


def test_use_topics_adds_the_topic_columns_to_both_towers_and_off_removes_them(topic_models) -> None:
    on, off = topic_models[True], topic_models[False]
    assert on.vocab.topic == ["fiction", *(f"topic {c:02d}" for c in range(8))]
    assert off.vocab.topic == []
    assert on.dims["item_dense"] - off.dims["item_dense"] == 9
    assert on.dims["user_dense"] - off.dims["user_dense"] == 9


def test_topic_inputs_follow_the_frames_topics(world, topic_frames, topic_models) -> None:
    model = topic_models[True]
    _, with_topics = model.item_vectors(topic_frames, world.text, world.hgnn)
    _, without = model.item_vectors(world.frames, world.text, world.hgnn)  # no item_topics: zeros, same widths
    assert with_topics.shape == without.shape and not torch.allclose(with_topics, without)
    _, off = topic_models[False].item_vectors(topic_frames, world.text, world.hgnn)
    _, off_plain = topic_models[False].item_vectors(world.frames, world.text, world.hgnn)
    assert torch.equal(off, off_plain)  # use_topics=False reads no topics at all


def test_save_and_load_with_topics_give_the_same_vectors(world, topic_frames, topic_models, tmp_path) -> None:
    model = topic_models[True]
    model.save(tmp_path / "topics.pt")
    loaded = TwoTowerModel.load(tmp_path / "topics.pt")
    assert loaded.vocab.topic == model.vocab.topic and loaded.config.use_topics
    for vectors in ("item_vectors", "user_vectors"):
        extra = (world.profile,) if vectors == "user_vectors" else ()
        _, before = getattr(model, vectors)(topic_frames, world.text, world.hgnn, *extra)
        _, after = getattr(loaded, vectors)(topic_frames, world.text, world.hgnn, *extra)
        assert torch.equal(before, after)


def test_a_model_saved_before_topics_existed_loads_and_reads_none(world, model, tmp_path) -> None:
    model.save(tmp_path / "old.pt")
    saved = torch.load(tmp_path / "old.pt", weights_only=True)
    del saved["config"]["use_topics"], saved["config"]["max_topics"], saved["vocab"]["topic"]
    torch.save(saved, tmp_path / "old.pt")
    loaded = TwoTowerModel.load(tmp_path / "old.pt")
    assert loaded.vocab.topic == []
    _, before = model.item_vectors(world.frames, world.text, world.hgnn)
    _, after = loaded.item_vectors(world.frames, world.text, world.hgnn)
    assert torch.equal(before, after)
