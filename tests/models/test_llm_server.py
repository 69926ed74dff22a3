"""Item topics over HTTP from a real llama_cpp.server: concurrent, every answer accounted for, then cached."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.enrichment import run_batch
from models.item_topics import ItemTopics, item_request
from models.llm import Completion, LLMError, Messages, OpenAICompatible
from tests.models.conftest import StoredCache
from tests.models.llm_server import MODEL_ALIAS, LlamaServer, ServerError, llama_server

CONCURRENCY = 4
# raw.items rows as assets/enrich.py reads them; five, so one request waits for a free slot
ITEMS = [
    {"item_id": "p1", "item_type": "podcast", "title": "Rockets and Orbits", "creator": "Space Desk",
     "genres": ["science"], "description": "Engineers explain how rockets reach orbit and why launches fail.",
     "language": "en"},
    {"item_id": "p2", "item_type": "podcast", "title": "Late Night Laughs", "creator": "The Stand-up Club",
     "genres": ["comedy"], "description": "Comedians trade stories about their worst gigs.", "language": "en"},
    {"item_id": "p3", "item_type": "podcast", "title": "Jazz Standards Explained", "creator": "Blue Note Hour",
     "genres": ["jazz", "music history"], "description": "One standard a week, from the first recording on.",
     "language": "en"},
    {"item_id": "a1", "item_type": "audiobook", "title": "The Long Trial", "creator": "J. Marsh",
     "genres": ["true crime"], "description": "A courtroom story of a famous murder case.", "language": "en"},
    {"item_id": "a2", "item_type": "audiobook", "title": "Les Jardins de Provence", "creator": "C. Martin",
     "genres": ["gardening"], "description": "Un jardinier raconte une année de potager.", "language": "fr"},
]


class Recording:
    """A ChatModel passing calls to another while counting how many are in flight at once."""

    def __init__(self, inner: OpenAICompatible) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_concurrency = inner.max_concurrency
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def complete(self, messages: Messages, schema: dict[str, Any], **options: Any) -> Completion:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return self.inner.complete(messages, schema, **options)
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    log_path: Path = tmp_path_factory.mktemp("llama_server") / "server.log"
    with llama_server(log_path, n_threads=1, n_ctx=1024) as running:
        yield running


@pytest.mark.slow
def test_concurrent_item_topics_are_all_answered_overlapped_and_then_cached(
    server: LlamaServer, cache: StoredCache
) -> None:
    requests = [item_request(item) for item in ITEMS]
    logged = server.log_size()
    with OpenAICompatible(server.base_url, MODEL_ALIAS, response_format="json_object", timeout_s=120,
                          max_concurrency=CONCURRENCY) as http:
        llm = Recording(http)
        first = run_batch(llm, requests, cache, budget=len(requests))
        answered = server.chat_requests(since=logged)
        logged = server.log_size()
        again = run_batch(llm, requests, cache, budget=len(requests))

    # every item answered: valid topics, or a failure recorded with its reason and the model's text
    assert [r.entity_id for r in first.results] == [item["item_id"] for item in ITEMS]
    assert (first.calls, first.backend_errors, first.deferred) == (len(ITEMS), 0, [])
    for result in first.results:
        if result.status == "ok":
            assert set(ItemTopics.model_validate(result.output).topics), result
        else:
            assert result.status == "failed" and result.error and result.raw_text, result
    ok = sum(r.status == "ok" for r in first.results)
    assert ok >= len(ITEMS) // 2, [(r.entity_id, r.error) for r in first.results]  # grammar-constrained JSON parses
    stored = dict(cache.con.execute("select input_hash, status from enrich.llm_cache").fetchall())
    assert stored == {r.input_hash: r.status for r in first.results}

    # the requests overlapped: four in flight at once on the client, on separate connections at the server, and
    # per-call seconds (which include queueing at the server) add up to more than the wall time, impossible one at
    # a time; the server itself runs one completion at a time, so no speed-up is asserted
    assert llm.most_in_flight == CONCURRENCY
    assert len(answered) == first.attempts and {status for _, status in answered} == {200}
    assert len({port for port, _ in answered}) >= 2, answered
    assert sum(r.seconds for r in first.results) > 1.5 * first.seconds, (first.seconds, first.results)

    # the same requests again: all from the cache, the server not asked
    assert (again.calls, again.cache_hits, again.failures) == (0, len(ITEMS), 0)
    assert all(r.from_cache for r in again.results)
    assert [(r.status, r.output) for r in again.results] == [(r.status, r.output) for r in first.results]
    assert server.chat_requests(since=logged) == []


def test_the_server_refuses_json_schema_so_llama_cpp_server_needs_json_object(server: LlamaServer) -> None:
    """llama-cpp-python 0.3.36's server accepts response_format 'text' or 'json_object' (with a schema), not the
    OpenAI 'json_schema': set llm_response_format: json_object for it. It answers the refusal with status 500."""
    request = item_request(ITEMS[0])
    schema = ItemTopics.model_json_schema()
    with OpenAICompatible(server.base_url, MODEL_ALIAS, response_format="json_schema", max_retries=0) as llm:
        refused = r"refused response_format 'json_schema' \(status 500\); set llm_response_format: json_object"
        with pytest.raises(LLMError, match=refused):
            llm.complete(request.messages, schema, max_tokens=8, temperature=0.0, seed=0)
    with OpenAICompatible(server.base_url, MODEL_ALIAS, response_format="json_object", max_retries=0) as llm:
        completion = llm.complete(request.messages, schema, max_tokens=8, temperature=0.0, seed=0)
    assert completion.text.startswith("{") and completion.finish_reason == "length"


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "not-a-model.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(ServerError, match="exited with status .* its log") as failure:
        with llama_server(tmp_path / "server.log", model_path=broken, ready_timeout_s=30):
            pass
    assert f"Failed to load model from file: {broken}" in str(failure.value)  # the server's own reason, from its log
