"""The LLM budget converges: least recently attempted first (no starvation), a budget in seconds, attempts stamped."""
from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from typing import Any

import polars as pl
import pytest

from models.enrichment import EnrichRequest, MemoryCache, run_batch
from models.item_topics import item_request
from models.llm import Completion, Messages
from warehouse.enrichment_tables import least_recently_attempted_first, stamp_attempts

VALID = json.dumps({"topics": ["science"], "tags": ["space"], "language": "en", "summary": "A show."})
NIGHT = dt.datetime(2026, 11, 1, 3, 0)


class SlowModel:
    """Answers every request validly after `delay` seconds; logs the item titles it was asked about."""

    name = "slow-model"
    max_concurrency = 1

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.asked: list[str] = []

    def complete(
        self, messages: Messages, schema: dict[str, Any], *, max_tokens: int, temperature: float, seed: int
    ) -> Completion:
        self.asked.append(messages[-1]["content"].split('"')[1])
        time.sleep(self.delay)
        return Completion(VALID, 40, 20, self.delay, "stop")




def night_requests(titles: Sequence[str], night: int) -> list[EnrichRequest]:
    # every input changes every night: the worst case for a budget that always starts at the head of the queue
    return [item_request({"item_id": title, "item_type": "podcast", "title": title, "description": f"night {night}"})
            for title in titles]


def test_consecutive_runs_with_a_small_budget_cover_different_items() -> None:
    titles = [f"item-{n}" for n in range(6)]  # most listened first
    model, cache = SlowModel(), MemoryCache()
    table = pl.DataFrame(schema={"entity_id": pl.String, "last_attempted_at": pl.Datetime("us")})
    asked_by_night = []
    for night in range(3):
        queue = least_recently_attempted_first(pl.DataFrame({"item_id": titles}), table, "item_id")
        requests = night_requests(queue["item_id"].to_list(), night)
        batch = run_batch(model, requests, cache, budget=2)
        asked_by_night.append(sorted(batch.attempted_ids))
        stamped = stamp_attempts(queue, "item_id", batch.attempted_ids, NIGHT + dt.timedelta(days=night))
        table = stamped.rename({"item_id": "entity_id"})
    assert asked_by_night == [["item-0", "item-1"], ["item-2", "item-3"], ["item-4", "item-5"]]
    fourth = least_recently_attempted_first(pl.DataFrame({"item_id": titles}), table, "item_id")
    assert fourth["item_id"].to_list()[:2] == ["item-0", "item-1"]  # round and round


def test_never_attempted_entities_come_first_then_the_longest_waiting() -> None:
    previous = pl.DataFrame({
        "entity_id": ["a", "b", "c"],
        "last_attempted_at": [NIGHT, NIGHT - dt.timedelta(days=3), None],
    })
    queue = least_recently_attempted_first(pl.DataFrame({"user_id": ["a", "b", "c", "d"]}), previous, "user_id")
    assert queue["user_id"].to_list() == ["c", "d", "b", "a"]
    stamped = stamp_attempts(queue, "user_id", {"d"}, NIGHT + dt.timedelta(days=1))
    assert dict(stamped.iter_rows()) == {
        "c": None, "d": NIGHT + dt.timedelta(days=1), "b": NIGHT - dt.timedelta(days=3), "a": NIGHT}


def test_a_budget_in_seconds_stops_asking_and_defers_the_rest() -> None:
    model, cache = SlowModel(delay=0.2), MemoryCache()
    requests = night_requests([f"item-{n}" for n in range(20)], 0)
    batch = run_batch(model, requests, cache, budget=100, time_budget_s=0.5)
    assert 1 <= batch.calls <= 4 and batch.calls + len(batch.deferred) == 20
    assert [request.entity_id for request in batch.deferred] == [f"item-{n}" for n in range(batch.calls, 20)]
    assert batch.seconds < 1.5
    unlimited = run_batch(SlowModel(), requests, MemoryCache(), budget=100, time_budget_s=0)
    assert (unlimited.calls, len(unlimited.deferred)) == (20, 0)
    with pytest.raises(ValueError, match="llm_time_budget_s"):
        run_batch(model, requests, cache, budget=1, time_budget_s=-1)


def test_cache_hits_are_not_attempts() -> None:
    model, cache = SlowModel(), MemoryCache()
    requests = night_requests(["a", "b"], 0)
    assert run_batch(model, requests, cache, budget=1).attempted_ids == {"a"}
    assert run_batch(model, requests, cache, budget=1).attempted_ids == {"b"}
    assert run_batch(model, requests, cache, budget=1).attempted_ids == set()
