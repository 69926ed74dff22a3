"""Tower inputs: history bags (most-played items first, per type, only what the user may see) and item ids."""
import polars as pl
import torch

from models.tower_inputs import Vocabularies, history_bags, item_inputs

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
