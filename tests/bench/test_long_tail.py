"""bench/long_tail.py's list surgery: a baseline's tail items take the last slots of each block of ranks."""
from __future__ import annotations

import polars as pl

from bench import long_tail


def lists(rows: dict[str, list[str]]) -> pl.DataFrame:
    return pl.DataFrame([{"user_id": user, "item_id": item, "rank": rank}
                         for user, items in rows.items() for rank, item in enumerate(items, 1)],
                        schema={"user_id": pl.String, "item_id": pl.String, "rank": pl.Int64})


def as_rows(frame: pl.DataFrame) -> dict[str, list[str]]:
    ordered = frame.sort("user_id", "rank")
    assert all(group["rank"].to_list() == list(range(1, group.height + 1))
               for _, group in ordered.group_by("user_id"))  # ranks 1..n, no gap, no repeat
    return {user: group["item_id"].to_list() for (user,), group in ordered.group_by("user_id", maintain_order=True)}


def test_tail_items_take_each_blocks_last_slots_in_the_sources_order_and_the_rest_keeps_its_order() -> None:
    base = lists({"u": ["a", "t2", "b", "c", "d", "e"], "v": ["a", "b", "c", "d", "e", "f"]})
    source = lists({"u": ["h", "t1", "t3", "x", "t2", "y"]})  # v has no source list: its list is unchanged
    tail = pl.Series(["t1", "t2", "t3", "f"])
    kept = long_tail.keep_tail(base, source, tail, ((1, 3), (4, 6)), length=6)
    # block 1-3 keeps t1, t3 (source ranks 2, 3) at ranks 2, 3; block 4-6 keeps t2 (source rank 5) at rank 6;
    # t2 leaves its base rank, and a, b, c fill ranks 1, 4, 5; d and e fall past the length
    assert as_rows(kept) == {"u": ["a", "t1", "t3", "b", "c", "t2"], "v": ["a", "b", "c", "d", "e", "f"]}


def test_only_the_first_block_keeps_tail_items_when_one_block_is_given() -> None:
    base = lists({"u": ["a", "b", "c", "d"]})
    source = lists({"u": ["t1", "h", "t2", "t3"]})  # t3 is at source rank 4, outside the block
    kept = long_tail.keep_tail(base, source, pl.Series(["t1", "t2", "t3"]), ((1, 3),), length=4)
    assert as_rows(kept) == {"u": ["a", "t1", "t2", "b"]}


def test_a_base_list_shorter_than_the_block_leaves_no_gap_in_the_ranks() -> None:
    base = lists({"u": ["a", "b"]})
    source = lists({"u": ["h", "t1"]})
    kept = long_tail.keep_tail(base, source, pl.Series(["t1"]), ((1, 10),), length=10)
    assert as_rows(kept) == {"u": ["a", "b", "t1"]}  # t1 took slot 10; ranks close up to 1, 2, 3


def test_tail_share_counts_each_scored_users_history_and_gives_zero_without_one() -> None:
    history = pl.DataFrame({"user_id": ["u", "u", "u", "u", "v", "x"], "item_id": ["t1", "a", "t2", "b", "a", "t1"]})
    shares = long_tail.tail_share(history, pl.Series(["t1", "t2"]), pl.Series(["u", "v", "w"]))
    assert dict(shares.sort("user_id").iter_rows()) == {"u": 0.5, "v": 0.0, "w": 0.0}  # x is not scored


def test_a_route_serves_the_sources_list_to_the_routed_users_and_the_base_list_to_the_others() -> None:
    base = lists({"u": ["a", "b"], "v": ["c", "d"]})
    source = lists({"u": ["t1", "h"], "v": ["t2", "t3"]})
    assert as_rows(long_tail.route(base, source, pl.Series(["v"]))) == {"u": ["a", "b"], "v": ["t2", "t3"]}
