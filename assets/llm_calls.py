"""LLM calls of the enrichment and judge assets: cached answers first, new ones within the budget, none lost."""
from __future__ import annotations

from collections.abc import Sequence

from assets.resources import Warehouse
from models.enrichment import BatchResult, EnrichRequest, run_batch
from models.llm import ChatModel
from warehouse.enrichment_tables import BufferedCache, cached_answers
from warehouse.llm_cache import LLMCache
from warehouse.settings import Settings


def known_answers(warehouse: Warehouse, model: ChatModel, requests: Sequence[EnrichRequest]) -> BufferedCache:
    """The cache of `requests`' answers already stored for this model and prompt version.

    Read from the newest state, published or not: an answer paid for is reused even when the gate of the
    stage that stored it failed."""
    keys = list(dict.fromkeys((model.name, request.prompt_version, request.input_hash) for request in requests))
    with warehouse.audit() as con:
        return BufferedCache(cached_answers(con, keys))


def ask(model: ChatModel, requests: list[EnrichRequest], cache: BufferedCache, settings: Settings,
        warehouse: Warehouse) -> BatchResult:
    """run_batch within llm_call_budget calls and llm_time_budget_s seconds. If the run stops half way, the answers paid for reach enrich.llm_cache
    before the error goes on; on success the caller stores `cache.new_rows` with its own table, in one write."""
    try:
        return run_batch(model, requests, cache, settings.llm_call_budget, seed=settings.seed,
                         time_budget_s=settings.llm_time_budget_s)
    except BaseException:
        with warehouse.write() as con:
            LLMCache(con).put_many(cache.new_rows)
        raise
