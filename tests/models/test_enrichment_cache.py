"""run_batch against a real DuckDB cache: hits cost nothing, the budget defers, deferred work goes first next run,
failed answers are asked again on later runs up to a bound, after new work."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

import duckdb

from models.enrichment import MAX_ATTEMPTS, EnrichRequest, run_batch
from models.item_topics import ItemTopics, item_request
from models.llm import Completion, LLMError, Messages
from tests.models.conftest import StoredCache
from warehouse import llm_cache
from warehouse.enrichment_tables import cached_answers
from warehouse.llm_cache import LLMCache

def night(n: int) -> dt.datetime:
    """`n` days from now: a later night of a daily schedule."""
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=n)


VALID = json.dumps({"language": "en", "topics": ["science"], "tags": ["space"], "summary": "A show."})


class ScriptedModel:
    """Answers from a script keyed by item title; logs which titles it was asked about, in order."""

    name = "scripted-model"
    max_concurrency = 1

    def __init__(self, answers: dict[str, list[str]] | None = None, fail: bool = False) -> None:
        self.answers = answers or {}
        self.fail = fail
        self.asked: list[str] = []

    def complete(
        self, messages: Messages, schema: dict[str, Any], *, max_tokens: int, temperature: float, seed: int
    ) -> Completion:
        title = messages[-1]["content"].split('"')[1]
        self.asked.append(title)
        if self.fail:
            raise LLMError("endpoint down")
        script = self.answers.get(title, [VALID])
        return Completion(script[min(len(self.asked_about(title)) - 1, len(script) - 1)], 50, 20, 0.01, "stop")

    def asked_about(self, title: str) -> list[str]:
        return [asked for asked in self.asked if asked == title]


def items(*titles: str) -> list[EnrichRequest]:
    return [item_request({"item_id": f"i-{title}", "item_type": "podcast", "title": title}) for title in titles]


def test_rerun_is_served_from_cache(cache: StoredCache) -> None:
    model = ScriptedModel()
    first = run_batch(model, items("a", "b", "c"), cache, budget=10)
    second = run_batch(model, items("a", "b", "c"), cache, budget=10)
    assert (first.calls, first.cache_hits) == (3, 0)
    assert (second.calls, second.cache_hits, second.prompt_tokens) == (0, 3, 0)
    assert model.asked == ["a", "b", "c"]
    assert [r.output for r in second.results] == [r.output for r in first.results]
    assert all(r.from_cache and r.status == "ok" for r in second.results)
    assert ItemTopics.model_validate(second.results[0].output).topics == ["science"]


def test_budget_defers_and_next_run_takes_deferred_first(cache: StoredCache) -> None:
    model = ScriptedModel()
    first = run_batch(model, items("a", "b", "c", "d", "e"), cache, budget=3)
    assert [r.entity_id for r in first.results] == ["i-a", "i-b", "i-c"]
    assert [r.entity_id for r in first.deferred] == ["i-d", "i-e"]
    assert first.metadata()["deferred"] == 2

    second = run_batch(model, first.deferred + items("f", "a"), cache, budget=2)
    assert model.asked == ["a", "b", "c", "d", "e"]
    assert [r.entity_id for r in second.deferred] == ["i-f"]
    assert (second.calls, second.cache_hits) == (2, 1)


def test_invalid_output_is_retried_then_cached_as_failed(cache: StoredCache) -> None:
    model = ScriptedModel({"fixed": ["oops", VALID], "broken": ["{not json", '{"language": "english"}']})
    result = run_batch(model, items("fixed", "broken"), cache, budget=10, attempts=2)
    fixed, broken = result.results
    assert (fixed.status, broken.status) == ("ok", "failed")
    assert broken.raw_text == '{"language": "english"}'
    assert (result.attempts, result.failures, result.failure_rate) == (4, 1, 0.5)
    stored = cache.con.execute("select status, attempt_count from enrich.llm_cache order by status").fetchall()
    assert stored == [("failed", 1), ("ok", 1)]


def test_failed_input_is_asked_again_on_later_runs_up_to_the_bound(cache: StoredCache) -> None:
    model = ScriptedModel({"broken": ["{not json"]})
    asked_per_run = []
    for n in range(MAX_ATTEMPTS + 1):
        before = len(model.asked)
        result = run_batch(model, items("broken", "fine"), cache, budget=10, attempts=1, now=night(n))
        asked_per_run.append(model.asked[before:])
    assert asked_per_run == [["broken", "fine"]] + [["broken"]] * (MAX_ATTEMPTS - 1) + [[]]
    assert [r.status for r in result.results] == ["failed", "ok"] and result.results[0].from_cache
    assert (result.calls, result.retries, result.cache_hits) == (0, 0, 2)
    failed = cache.con.execute("select attempt_count, raw_text from enrich.llm_cache where status = 'failed'")
    assert failed.fetchall() == [(MAX_ATTEMPTS, "{not json")]


def test_a_failure_is_not_asked_again_the_same_evening(cache: StoredCache) -> None:
    model = ScriptedModel({"broken": ["{not json"]})
    run_batch(model, items("broken"), cache, budget=10, attempts=1)
    rerun = run_batch(model, items("broken"), cache, budget=10, attempts=1)  # the clock's now, minutes later
    assert (rerun.calls, rerun.retries, model.asked) == (0, 0, ["broken"])
    assert rerun.results[0].status == "failed" and rerun.results[0].from_cache
    asap = run_batch(model, items("broken"), cache, budget=10, attempts=1, retry_failed_after_s=0)
    assert (asap.calls, asap.retries) == (1, 1)


def test_a_later_success_replaces_the_failed_answer(cache: StoredCache) -> None:
    model = ScriptedModel({"late": ["{not json", "{not json", VALID]})
    runs = [run_batch(model, items("late"), cache, budget=5, attempts=1, max_attempts=5, now=night(n))
            for n in range(4)]
    assert [r.results[0].status for r in runs] == ["failed", "failed", "ok", "ok"]
    assert [(r.calls, r.retries) for r in runs] == [(1, 0), (1, 1), (1, 1), (0, 0)]
    assert model.asked == ["late"] * 3
    rows = cache.con.execute("select status, attempt_count, output_json is not null, error from enrich.llm_cache")
    assert rows.fetchall() == [("ok", 3, True, None)]


def test_new_inputs_go_before_retries_within_the_budget(cache: StoredCache) -> None:
    model = ScriptedModel({"x": ["{not json"]})
    run_batch(model, items("x"), cache, budget=1, attempts=1)
    starved = run_batch(model, items("x", "a", "b", "c"), cache, budget=2, attempts=1, now=night(1))
    assert model.asked == ["x", "a", "b"]
    assert [r.entity_id for r in starved.deferred] == ["i-c"]  # new work waits in deferred; x keeps its failure
    assert [(r.entity_id, r.status, r.from_cache) for r in starved.results][0] == ("i-x", "failed", True)
    assert starved.retries == 0

    spare = run_batch(model, items("x", "a", "c"), cache, budget=2, attempts=1, now=night(2))
    assert model.asked[3:] == ["c", "x"] and (spare.calls, spare.retries, spare.cache_hits) == (2, 1, 1)
    assert spare.metadata()["retries"] == 1


def test_a_cache_from_before_retries_reads_as_asked_once_and_upgrades() -> None:
    con = duckdb.connect()
    con.execute(llm_cache.CREATE.split("-- runs that asked")[0])  # the table as it was, no attempt_count
    con.execute("insert into enrich.llm_cache values ('m', 'v', 'h', 'failed', null, 'x', 'bad', 1, 1, 0.1, now())")
    key = ("m", "v", "h")
    assert cached_answers(con, [key])[key]["attempt_count"] == 1
    LLMCache(con)
    assert con.execute("select attempt_count from enrich.llm_cache").fetchall() == [(1,)]
    assert cached_answers(con, [key])[key]["attempt_count"] == 1


def test_identical_inputs_are_asked_once(cache: StoredCache) -> None:
    model = ScriptedModel()
    same = [item_request({"item_id": item_id, "item_type": "music", "title": "twin"}) for item_id in ("x", "y")]
    result = run_batch(model, same, cache, budget=1)
    assert model.asked == ["twin"]
    assert [r.entity_id for r in result.results] == ["x", "y"] and not result.deferred


def test_changed_input_is_a_new_call(cache: StoredCache) -> None:
    model = ScriptedModel()
    before = item_request({"item_id": "i", "item_type": "podcast", "title": "t", "description": "old"})
    after = item_request({"item_id": "i", "item_type": "podcast", "title": "t", "description": "new"})
    run_batch(model, [before], cache, budget=5)
    result = run_batch(model, [after], cache, budget=5)
    assert before.input_hash != after.input_hash and result.calls == 1


def test_endpoint_down_stops_early_and_caches_nothing(cache: StoredCache) -> None:
    model = ScriptedModel(fail=True)
    result = run_batch(model, items("a", "b", "c", "d", "e"), cache, budget=10, max_backend_errors=2)
    assert (result.calls, result.backend_errors, result.failures) == (2, 2, 2)
    assert [r.entity_id for r in result.deferred] == ["i-c", "i-d", "i-e"]
    assert cache.con.execute("select count(*) from enrich.llm_cache").fetchone() == (0,)


def test_cache_rows_are_stored_whole(cache: StoredCache) -> None:
    run_batch(ScriptedModel(), items("a"), cache, budget=1)
    row = cache.con.execute(
        "select model, prompt_version, status, output_json, prompt_tokens, completion_tokens, created_at is not null"
        " from enrich.llm_cache"
    ).fetchone()
    assert row[:3] == ("scripted-model", "item_topics.v1", "ok")
    assert json.loads(row[3])["tags"] == ["space"] and row[4:] == (50, 20, True)
