"""Tower inputs: history bags (most-played items first, per type, only what the user may see), item ids, topics."""
from dataclasses import replace

import polars as pl
import torch

from models.recommender import WEAK_FLAGS, topic_vocabulary
from models.tower_inputs import Vocabularies, history_bags, item_inputs, topic_shares, user_inputs

HISTORY = pl.DataFrame({
    "user_id": ["u1", "u1", "u1", "u1", "u2", "u2", "u3"],
    "item_id": ["m1", "m2", "m3", "p1", "m1", "p1", "m9"],
    "item_type": ["music", "music", "music", "podcast", "music", "podcast", "music"],
    "count_events": [1, 5, 3, 2, 4, 1, 7],
})


def test_bags_hold_the_most_played_known_items_per_type() -> None:
    vocabulary = ["m1", "m2", "m3", "p1"]  # m9 has no embedding: it is left out
    bags = history_bags(pl.Series(["u1", "u2", "u3", "nobody"]), HISTORY, vocabulary, ("music", "podcast"), 2)
    assert bags.shape == (4, 2, 2)
    assert bags[0].tolist() == [[2, 3], [4, 0]]  # rows + 1: m2 (5 plays), m3 (3 plays); p1, padding
    assert bags[1].tolist() == [[1, 0], [4, 0]]
    assert bags[2].tolist() == [[0, 0], [0, 0]] and bags[3].tolist() == [[0, 0], [0, 0]]


def test_the_vocabulary_keeps_items_two_or_more_users_touched_most_reached_first() -> None:
    vocab = Vocabularies.build(pl.DataFrame({"age_bucket": ["18-24"], "country": ["SE"]}),
                               pl.DataFrame({"item_type": ["podcast"], "genres": [["x"]], "language": ["en"]}),
                               ("podcast",), 8, HISTORY, max_history_items=10)
    assert vocab.history_item == ["m1", "p1"]
    capped = Vocabularies.build(pl.DataFrame({"age_bucket": ["18-24"], "country": ["SE"]}),
                                pl.DataFrame({"item_type": ["podcast"], "genres": [["x"]], "language": ["en"]}),
                                ("podcast",), 8, HISTORY, max_history_items=0)
    assert capped.history_item == []


def test_item_rows_index_the_history_vocabulary_and_fresh_items_read_row_zero() -> None:
    vocab = Vocabularies(age_bucket=[], country=[], language=["en"], genre=["x"], history_item=["a1", "a2", "a3"])
    items = pl.DataFrame({"item_id": ["a3", "new", "a1"], "language": ["en", "en", "sv"],
                          "genres": [["x"], [], ["y"]]})
    text = (pl.Series(["a1", "a3", "new"]), torch.eye(3))
    inputs = item_inputs(pl.Series(["a3", "new", "a1"]), items, vocab, text, None, 0, None, with_ids=True)
    assert inputs.bags.shape == (3, 1, 1)
    assert inputs.bags.flatten().tolist() == [3, 0, 1]  # a3 is row 2 (+1); 'new' came after training
    assert inputs.categorical.flatten().tolist() == [1, 1, 0]  # sv was never seen: unknown
    assert item_inputs(pl.Series(["a3"]), items, vocab, text, None, 0, None).bags is None


TOPICS = pl.DataFrame({"item_id": ["a1", "a2", "p1", "x9"],
                       "topics": [["Jazz", " comedy"], ["true crime", "horror"], ["comedy"], []]},
                      schema={"item_id": pl.String, "topics": pl.List(pl.String)})


def test_the_topic_vocabulary_keeps_the_topics_most_items_carry() -> None:
    items = pl.Series(["a1", "a2", "p1", "x9"])
    assert topic_vocabulary(TOPICS, items, 64) == ["comedy", "horror", "jazz", "true crime"]
    assert topic_vocabulary(TOPICS, items, 1) == ["comedy"]  # on two items, the others on one
    assert topic_vocabulary(TOPICS, pl.Series(["a2"]), 64) == ["horror", "true crime"]
    assert topic_vocabulary(None, items, 64) == [] and topic_vocabulary(TOPICS, items, 0) == []


def test_item_inputs_carry_a_topic_multi_hot_between_genres_and_text() -> None:
    vocab = Vocabularies(age_bucket=[], country=[], language=["en"], genre=["x"], topic=["comedy", "jazz", "true crime"])
    items = pl.DataFrame({"item_id": ["a1", "a2", "a3"], "language": "en", "genres": [["x"], [], ["x"]]})
    text = (pl.Series(["a1", "a2", "a3"]), torch.full((3, 2), 0.5))
    inputs = item_inputs(pl.Series(["a1", "a2", "a3"]), items, vocab, text, None, 0, None, item_topics=TOPICS)
    assert inputs.dense.tolist() == [
        [1, 1, 1, 0, 0.5, 0.5],  # genre x | comedy, jazz (case and spaces ignored) | text
        [0, 0, 0, 1, 0.5, 0.5],  # horror is outside the vocabulary
        [1, 0, 0, 0, 0.5, 0.5],  # no topics: zeros
    ]
    without = item_inputs(pl.Series(["a1"]), items, replace(vocab, topic=[]), text, None, 0, None, item_topics=TOPICS)
    assert without.dense.tolist() == [[1, 0.5, 0.5]]  # an empty topic vocabulary adds no columns


def test_topic_shares_are_the_share_of_a_users_topic_labelled_items_per_topic() -> None:
    history = pl.DataFrame({"user_id": ["u1", "u1", "u1", "u1", "u1", "u2"],
                            "item_id": ["a1", "a2", "p1", "m1", "a1", "m1"]})  # a1 twice (two periods): once
    shares = topic_shares(pl.Series(["u1", "u2", "nobody"]), history, TOPICS, ["comedy", "jazz", "true crime"])
    third = 1 / 3  # u1's items with topics: a1 (comedy, jazz), a2 (true crime), p1 (comedy); m1 has none
    assert torch.allclose(shares, torch.tensor([[2 * third, third, third], [0, 0, 0], [0, 0, 0]]))
    assert torch.equal(topic_shares(pl.Series(["u1"]), history, None, ["comedy"]), torch.zeros(1, 1))


def test_user_inputs_add_topic_shares_only_with_a_topic_vocabulary() -> None:
    history = HISTORY.with_columns(pl.lit(True).alias("is_played"), pl.lit(1).alias("count_plays"),
                                   *[pl.lit(False).alias(flag) for flag in WEAK_FLAGS])
    user_stats = pl.DataFrame({"user_id": ["u1"], "age_bucket": ["18-24"], "country": ["SE"]})
    text = (pl.Series(["m1", "m2", "m3", "p1"]), torch.eye(4))
    vocab = Vocabularies(age_bucket=["18-24"], country=["SE"], language=[], genre=[], topic=["comedy", "jazz"])
    args = (pl.Series(["u1"]), history, user_stats)
    kwargs = {"text": text, "graph": text, "profile": None, "profile_dim": 0, "item_types": ("music", "podcast"),
              "graph_types": ("podcast",), "music_type": "music", "item_topics": TOPICS}
    with_topics = user_inputs(*args, vocab, **kwargs).dense
    plain = user_inputs(*args, replace(vocab, topic=[]), **kwargs).dense
    assert with_topics.shape[1] == plain.shape[1] + 2
    assert with_topics[0, -2:].tolist() == [1.0, 0.0]  # u1's only item with topics is p1 (comedy)
