"""History bags of the user tower: most-played items first, per type, only what the user may see."""
import polars as pl

from models.tower_inputs import Vocabularies, history_bags

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
