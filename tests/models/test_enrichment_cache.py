"""run_batch against a real DuckDB cache: hits cost nothing, the budget defers, deferred work goes first next run."""
from __future__ import annotations

import json
from typing import Any


from models.enrichment import EnrichRequest, run_batch
from models.item_topics import ItemTopics, item_request
from models.llm import Completion, LLMError, Messages
from tests.models.conftest import StoredCache

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

    rerun = run_batch(model, items("broken"), cache, budget=10)
    assert rerun.calls == 0 and rerun.results[0].status == "failed"
    assert rerun.results[0].raw_text == '{"language": "english"}'


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
