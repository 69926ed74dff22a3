"""Baselines: popularity order, ALS, item KNN and EASE on planted blocks, mean-embedding KNN, and who each serves."""
import numpy as np
import scipy.sparse as sp
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


def planted_blocks(podcasts: bool = False) -> tuple[list[tuple], dict[str, str], dict[str, str]]:
    """4 blocks of 8 books and 12 users; each user played every book of their block but one (withheld),
    and with `podcasts` the block's podcast too. Returns (events, withheld book per user, item types)."""
    rng = np.random.default_rng(0)
    events, withheld = [], {}
    for block in range(4):
        for u in range(12):
            user = f"u{block}_{u:02d}"
            skip = int(rng.integers(8))
            withheld[user] = f"a{block}_{skip}"
            events += [("train", user, f"a{block}_{j}", "play") for j in range(8) if j != skip]
            events += [("train", user, f"p{block}", "play")] if podcasts else []
    items = {f"a{b}_{j}": "audiobook" for b in range(4) for j in range(8)}
    return events, withheld, items | ({f"p{b}": "podcast" for b in range(4)} if podcasts else {})


def test_als_recovers_a_planted_block_structure(frames_from) -> None:
    events, withheld, items = planted_blocks()
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


def block_world(frames_from, blocks: int = 3):
    """Per block: 8 warm users touched its podcasts, music and audiobooks; 1 cold user only 2 of its podcasts."""
    events, items = [], {}
    for b in range(blocks):
        items |= {f"p{b}_{j}": "podcast" for j in range(4)} | {f"m{b}_{j}": "music" for j in range(3)}
        items |= {f"a{b}_{j}": "audiobook" for j in range(4)}
        for u in range(8):
            events += [("train", f"w{b}_{u}", item, "play") for item in items if item[1] == str(b)]
        events += [("train", f"cold{b}", f"p{b}_{j}", "play") for j in range(2)]
    events += [("train", "w0_0", "a1_0", "play")]  # one cross-block play, so blocks are not disjoint
    return frames_from(events, items), items


@pytest.mark.parametrize("build", [baselines.item_knn, baselines.ease], ids=["item_knn", "ease"])
def test_cold_users_reach_their_blocks_audiobooks_through_podcasts(frames_from, build) -> None:
    frames, items = block_world(frames_from)
    books = [item for item, kind in items.items() if kind == "audiobook"]
    lists = build(frames, pl.Series(books), "audiobook").recommend(["cold0", "cold1", "cold2"], k=4)
    for b in range(3):
        mine = lists.filter(pl.col("user_id") == f"cold{b}").sort("rank")
        assert set(mine["item_id"]) == {f"a{b}_{j}" for j in range(4)}
        assert (mine["score"] > 0).all()


def test_item_knn_scores_are_cosines_over_kept_neighbours(frames_from) -> None:
    # p0: u1, u2, cold; a0: u1, u2; a1: u2, u3. cos(p0, a0) = 2/sqrt(6), cos(p0, a1) = 1/sqrt(6), cos(a0, a1) = 1/2.
    events = [("train", "u1", "p0", "play"), ("train", "u1", "a0", "play"), ("train", "u2", "p0", "play"),
              ("train", "u2", "a0", "play"), ("train", "u2", "a1", "play"), ("train", "u3", "a1", "play"),
              ("train", "cold", "p0", "play")]
    frames = frames_from(events, {"p0": "podcast", "a0": "audiobook", "a1": "audiobook"})
    candidates = pl.Series(["a0", "a1"])
    every = baselines.item_knn(frames, candidates, "audiobook", baselines.ItemKnnConfig(weighted=False))
    lists = every.recommend(["cold"], k=5)
    assert lists["item_id"].to_list() == ["a0", "a1"]
    assert lists["score"].to_list() == pytest.approx([2 / np.sqrt(6), 1 / np.sqrt(6)])
    # One neighbour each: a0 keeps p0 (0.82, over a1's 1/2); a1 keeps a0 (1/2, over p0's 0.41).
    one = baselines.item_knn(frames, candidates, "audiobook", baselines.ItemKnnConfig(neighbours=1, weighted=False))
    assert one.recommend(["cold"], k=5)["score"].to_list() == pytest.approx([2 / np.sqrt(6), 0.0])
    assert one.recommend(["u3"], k=5)["item_id"].to_list() == ["a0"]  # a1 was consumed
    weighted = baselines.item_knn(frames, candidates, "audiobook")
    assert weighted.recommend(["cold"], k=1)["score"].to_list() == pytest.approx([np.log(2.0) * 2 / np.sqrt(6)])


def test_ease_recovers_the_withheld_item_of_a_planted_block(frames_from) -> None:
    events, withheld, items = planted_blocks(podcasts=True)
    frames = frames_from(events, items)
    books = pl.Series([item for item, kind in items.items() if kind == "audiobook"])
    for config in (baselines.EaseConfig(), baselines.EaseConfig(regularization=5.0)):
        top = baselines.ease(frames, books, "audiobook", config).recommend(list(withheld), k=1)
        hits = top.filter(pl.col("item_id") == pl.col("user_id").replace_strict(withheld))
        assert hits.height == len(withheld)


@pytest.mark.parametrize("items", [7, 2500])  # 2500 spans more than one mirrored block of rows
def test_ease_weights_match_the_closed_form_of_a_float64_inverse(items: int) -> None:
    rng = np.random.default_rng(items)
    x = (rng.random((4 * items, items)) < 0.05).astype(np.float32)
    gram = x.T @ x
    p = np.linalg.inv(gram.astype(np.float64) + 50.0 * np.eye(items))
    expected = -p / np.diag(p)
    np.fill_diagonal(expected, 0.0)
    got = baselines.ease_weights(gram.copy(), 50.0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(expected).max())  # single precision
    k = min(10, items)
    top = [np.argsort(-(x[:50] @ b), axis=1)[:, :k] for b in (got, expected)]
    assert np.mean([len(set(a) & set(b)) / k for a, b in zip(*top)]) >= 0.98  # the same top k, but near ties


@pytest.mark.parametrize("columns", [[4, 0, 6], [], list(range(7))])
def test_ease_weights_of_some_columns_are_those_columns_of_the_whole_matrix(columns: list[int]) -> None:
    rng = np.random.default_rng(5)
    x = (rng.random((60, 7)) < 0.3).astype(np.float32)
    whole = baselines.ease_weights(x.T @ x, 5.0)
    some = baselines.ease_weights(x.T @ x, 5.0, np.array(columns, dtype=np.int64))
    assert some.dtype == np.float32 and some.shape == (7, len(columns))
    np.testing.assert_allclose(some, whole[:, columns], atol=1e-6 * np.abs(whole).max())
    assert all(some[item, n] == 0.0 for n, item in enumerate(columns))  # an item never recommends itself


@pytest.mark.parametrize("pairs_per_block", [1, 50, 1 << 25])  # 1: a user per block, even one over the limit
def test_dense_gram_sums_blocks_of_users_to_the_whole_product(pairs_per_block: int) -> None:
    rng = np.random.default_rng(3)
    x = sp.random(200, 40, density=0.1, format="csr", random_state=rng, dtype=np.float32)
    x.data[:] = rng.integers(1, 4, x.nnz)
    x = (sp.diags((np.arange(200) != 5).astype(np.float32)) @ x).tocsr()  # user 5 has no items
    x.eliminate_zeros()
    got = baselines.dense_gram(x, pairs_per_block)
    assert got.dtype == np.float32 and got.shape == (40, 40)
    np.testing.assert_array_equal(got, (x.T @ x).toarray())
    assert baselines.dense_gram(sp.csr_matrix((0, 3), dtype=np.float32)).shape == (3, 3)


def test_ease_weights_refuse_a_matrix_that_is_not_positive_definite() -> None:
    with pytest.raises(np.linalg.LinAlgError, match="raise the regularization"):
        baselines.ease_weights(-np.eye(3, dtype=np.float32), 0.5)


def test_ease_keeps_the_most_popular_items_and_serves_only_users_with_one(frames_from) -> None:
    events = [("train", u, "a0", "play") for u in ("u1", "u2", "u3")] + [("train", "u1", "p0", "play"),
              ("train", "u2", "p0", "play"), ("train", "rare", "a1", "play")]
    frames = frames_from(events, {"a0": "audiobook", "a1": "audiobook", "p0": "podcast"})
    capped = baselines.ease(frames, pl.Series(["a0", "a1"]), "audiobook", baselines.EaseConfig(max_items=2))
    assert capped.recommend(["rare"], k=5).height == 0  # a1 was dropped, so rare has no known item
    assert capped.recommend(["u3"], k=5).height == 0  # a0 consumed, a1 not kept: nothing left to rank
    assert capped.recommend(["u1", "nobody"], k=5).height == 0
    full = baselines.ease(frames, pl.Series(["a0", "a1"]), "audiobook")
    assert full.recommend(["rare"], k=5)["item_id"].to_list() == ["a0"]


@pytest.mark.parametrize("build", [baselines.item_knn, baselines.ease], ids=["item_knn", "ease"])
def test_empty_history_and_unknown_users_get_no_list(frames_from, build) -> None:
    frames = frames_from([("holdout", "u1", "a0", "play")], {"a0": "audiobook", "p0": "podcast"})
    recommender = build(frames, pl.Series(["a0"]), "audiobook")
    assert recommender.recommend(["u1", "nobody"], k=5).height == 0
    knn = build(frames, pl.Series(["a0"]), "audiobook", periods=("holdout",))
    assert knn.recommend(["nobody"], k=5).height == 0
    assert knn.recommend(["u1"], k=5, exclude_consumed=False)["item_id"].to_list() == ["a0"]


def test_llm_knn_reads_topics_when_the_texts_alone_would_pick_another_item(frames_from) -> None:
    frames = frames_from([("train", "fan", "a0", "play")], {"a0": "audiobook", "a1": "audiobook", "a2": "audiobook"})
    texts = pl.DataFrame({"item_id": ["a0", "a1", "a2"], "embedding": [[1.0, 0.0], [0.8, 0.6], [0.9, 0.436]]})
    topics = pl.DataFrame({"item_id": ["a0", "a1", "a2"], "topics": [["jazz"], ["jazz"], ["comedy"]]})
    candidates = pl.Series(["a1", "a2"])
    plain = baselines.mean_embedding_knn(frames, texts, candidates, "audiobook").recommend(["fan"], k=2)
    assert plain["item_id"].to_list() == ["a2", "a1"]  # text cosine 0.9 against 0.8
    knn = baselines.mean_embedding_knn(frames, texts, candidates, "audiobook", topics=topics)
    lists = knn.recommend(["fan"], k=2)
    assert lists["item_id"].to_list() == ["a1", "a2"]  # the shared topic decides
    w2 = baselines.TOPIC_WEIGHT ** 2  # (0.8 + w^2) / (1 + w^2) and 0.9 / (1 + w^2)
    assert lists["score"].to_list() == pytest.approx([(0.8 + w2) / (1 + w2), 0.9 / (1 + w2)], abs=1e-3)
    assert np.allclose(knn.item_vectors.norm(dim=1).numpy(), 1.0, atol=1e-3)  # unit texts stay unit length
