"""Batch enrichment: schema-validated LLM calls, cached by (model, prompt version, input hash), within a budget of
calls and seconds."""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, Sequence

from pydantic import BaseModel

from models.llm import ChatModel, Generation, Messages, generate

CacheKey = tuple[str, str, str]  # (model, prompt_version, input_hash)
# Runs that may ask for one input: a cached 'failed' answer (invalid output after every in-run attempt) is asked
# again on a later night until this many runs have failed on it; then it stays failed until its input changes.
MAX_ATTEMPTS = 3
# How old a failure must be before it is asked again: a later night of a daily schedule, not a rerun the same
# evening (which would get the same answer from the same model).
RETRY_FAILED_AFTER_S = 20 * 3600.0
CHOICES_KEY = "_choice_probabilities"  # where a cached answer keeps EnrichResult.choices (no schema has this field)


class EnrichmentCache(Protocol):
    """Stored answers; rows are plain dicts with the keys of `cache_row` (a row without `attempt_count` was
    asked once)."""

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, dict[str, Any]]: ...

    def put_many(self, rows: Sequence[dict[str, Any]]) -> None: ...


class MemoryCache:
    """An EnrichmentCache in memory, empty at first: benchmarks and tests that measure every call use it."""

    def __init__(self) -> None:
        self.rows: dict[CacheKey, dict[str, Any]] = {}

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, dict[str, Any]]:
        return {key: self.rows[key] for key in keys if key in self.rows}

    def put_many(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows.update({(row["model"], row["prompt_version"], row["input_hash"]): row for row in rows})


@dataclass(frozen=True)
class EnrichRequest:
    entity_id: str
    prompt_version: str
    messages: Messages
    output_type: type[BaseModel]
    max_tokens: int
    # What the answer depends on, when that is coarser than the prompt (a user's taste, not tonight's counts):
    # the cache key then follows it, and a prompt change needs a new prompt_version. None: the prompt itself.
    signature: str | None = None
    # > 0: ask for that many alternatives per token and keep the probabilities of the first field's values
    # (EnrichResult.choices; models.logprobs): a judge's P(aligned)
    top_logprobs: int = 0
    input_hash: str = field(init=False)

    def __post_init__(self) -> None:
        # the input, the schema and the length cap are all inputs: change any, and the answer is new
        source: Any = self.messages if self.signature is None else ["signature", self.signature]
        asked = [self.max_tokens, self.top_logprobs] if self.top_logprobs else [self.max_tokens]
        payload = json.dumps([source, *asked], sort_keys=True, ensure_ascii=False)
        digest = hashlib.sha256((_schema_json(self.output_type) + payload).encode()).hexdigest()[:32]
        object.__setattr__(self, "input_hash", digest)


@functools.cache
def _schema_json(output_type: type[BaseModel]) -> str:
    return json.dumps(output_type.model_json_schema(), sort_keys=True)  # built once, not once per catalogue item


@dataclass(frozen=True)
class EnrichResult:
    entity_id: str
    model: str
    prompt_version: str
    input_hash: str
    status: str  # 'ok' | 'failed'
    output: dict[str, Any] | None
    raw_text: str
    error: str | None
    from_cache: bool
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    choices: dict[str, float] | None = None  # asked with top_logprobs: {value of the first field: probability}


@dataclass(frozen=True)
class BatchResult:
    results: list[EnrichResult]  # request order; cache hits and this run's calls
    deferred: list[EnrichRequest]  # left for the next run, which should put them first
    calls: int  # distinct inputs sent to the model this run
    attempts: int  # model calls including retries of invalid output
    cache_hits: int
    retries: int  # inputs whose cached answer had failed, asked again this run
    failures: int  # this run's calls that ended without valid output
    backend_errors: int  # failures where the endpoint, not the model, failed; not cached
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # wall time of the run

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def attempted_ids(self) -> set[str]:
        """Entities this run sent to the model (answered, failed or not reached the endpoint), not cache hits."""
        return {result.entity_id for result in self.results if not result.from_cache}

    def metadata(self) -> dict[str, int | float]:
        return {
            "calls": self.calls,
            "attempts": self.attempts,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "failures": self.failures,
            "failure_rate": round(self.failure_rate, 4),
            "backend_errors": self.backend_errors,
            "deferred": len(self.deferred),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 3),
        }


def cache_row(model: str, request: EnrichRequest, generation: Generation, attempt_count: int = 1) -> dict[str, Any]:
    """The stored form of one answer; `attempt_count` is the number of runs that have asked, this one included.
    Choice probabilities ride in output_json under CHOICES_KEY, beside the answer's fields."""
    output = generation.output
    if output is not None and generation.choices is not None:
        output = {**output, CHOICES_KEY: generation.choices}
    return {
        "model": model,
        "prompt_version": request.prompt_version,
        "input_hash": request.input_hash,
        "status": generation.status,
        "output_json": json.dumps(output) if output is not None else None,
        "raw_text": generation.raw_text,
        "error": generation.error,
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "seconds": generation.seconds,
        "attempt_count": attempt_count,
    }


def run_batch(
    llm: ChatModel,
    requests: Sequence[EnrichRequest],
    cache: EnrichmentCache,
    budget: int,
    *,
    attempts: int = 3,
    seed: int = 0,
    max_backend_errors: int = 3,
    flush_every: int = 16,
    time_budget_s: float = 0.0,
    max_attempts: int = MAX_ATTEMPTS,
    retry_failed_after_s: float = RETRY_FAILED_AFTER_S,
    now: dt.datetime | None = None,
) -> BatchResult:
    """Answer every request from the cache or the model; at most `budget` distinct inputs reach the model.

    Inputs beyond the budget, those not started once `time_budget_s` seconds have passed (0: no limit; calls
    under way are finished), and those not started once `max_backend_errors` endpoint failures show the
    endpoint is down come back as `deferred`, in request order: put the least recently attempted first.
    Answers reach the cache as they arrive, so an interrupted run keeps what it paid for.

    A cached 'failed' answer asked fewer than `max_attempts` runs, the last at least `retry_failed_after_s`
    before `now` (UTC; default the clock), is asked again with new seeds, after every never-asked input, so
    retries use the budget new work leaves over; until then (and after the bound) its failed answer is the
    result. 'ok' answers are final.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1 (got {max_attempts})")
    if retry_failed_after_s < 0:
        raise ValueError(f"retry_failed_after_s must be >= 0 (got {retry_failed_after_s})")
    if budget < 0:
        raise ValueError(f"budget must be >= 0 (got {budget})")
    if time_budget_s < 0:
        raise ValueError(f"time_budget_s must be >= 0, 0 for no limit (got {time_budget_s}); fix llm_time_budget_s")
    started = time.perf_counter()
    deadline = started + time_budget_s if time_budget_s else float("inf")
    by_key: dict[CacheKey, list[EnrichRequest]] = {}
    for request in requests:
        by_key.setdefault((llm.name, request.prompt_version, request.input_hash), []).append(request)
    cached = cache.get_many(list(by_key)) if by_key else {}
    answers: dict[CacheKey, EnrichResult] = {key: _from_cache(key, row) for key, row in cached.items()}
    misses = [key for key in by_key if key not in cached]
    queue, over_budget = misses[:budget], misses[budget:]
    asked_before = {key: _attempt_count(row) for key, row in cached.items()}
    retry_before = (now or dt.datetime.now(dt.timezone.utc)).replace(tzinfo=None) - dt.timedelta(
        seconds=retry_failed_after_s)
    queue += [key for key in by_key if key in cached and cached[key]["status"] == "failed"
              and asked_before[key] < max_attempts
              and _attempted_at(cached[key]) <= retry_before][:budget - len(queue)]
    retries = set(queue) - set(misses)

    generations: dict[CacheKey, Generation] = {}
    backend_errors = 0
    unsent: list[CacheKey] = []
    pending_rows: list[dict[str, Any]] = []
    workers = max(1, llm.max_concurrency)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        in_flight: dict[Future[Generation], CacheKey] = {}
        upcoming = iter(queue)
        try:
            while True:
                while (len(in_flight) < workers and backend_errors < max_backend_errors
                       and time.perf_counter() < deadline):
                    key = next(upcoming, None)
                    if key is None:
                        break
                    first = by_key[key][0]
                    # a retry on a later run samples with seeds the failed runs did not use
                    future = pool.submit(generate, llm, first.messages, first.output_type, max_tokens=first.max_tokens,
                                         attempts=attempts, seed=seed + asked_before.get(key, 0) * attempts,
                                         top_logprobs=first.top_logprobs)
                    in_flight[future] = key
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    key = in_flight.pop(future)
                    generation = future.result()
                    generations[key] = generation
                    if generation.is_backend_error:
                        backend_errors += 1
                    else:
                        pending_rows.append(cache_row(llm.name, by_key[key][0], generation,
                                                      asked_before.get(key, 0) + 1))
                if len(pending_rows) >= flush_every:
                    cache.put_many(pending_rows)
                    pending_rows = []
            unsent = list(upcoming)
        finally:
            if pending_rows:
                cache.put_many(pending_rows)

    for key, generation in generations.items():
        answers[key] = _from_generation(key, generation)
    results = [
        replace(answers[(llm.name, request.prompt_version, request.input_hash)], entity_id=request.entity_id)
        for request in requests
        if (llm.name, request.prompt_version, request.input_hash) in answers
    ]
    deferred = [request for key in unsent + over_budget if key not in retries for request in by_key[key]]
    return BatchResult(
        results=results,
        deferred=deferred,
        calls=len(generations),
        attempts=sum(g.attempts for g in generations.values()),
        cache_hits=sum(len(by_key[key]) for key in cached if key not in generations),
        retries=len(retries & set(generations)),
        failures=sum(g.status == "failed" for g in generations.values()),
        backend_errors=backend_errors,
        prompt_tokens=sum(g.prompt_tokens for g in generations.values()),
        completion_tokens=sum(g.completion_tokens for g in generations.values()),
        seconds=time.perf_counter() - started,
    )


def _attempt_count(row: dict[str, Any]) -> int:
    return int(row.get("attempt_count") or 1)


def _attempted_at(row: dict[str, Any]) -> dt.datetime:
    """When the row's answer was last asked for, naive UTC; a row stored this run has none: just now."""
    when = row.get("attempted_at")
    if when is None:
        return dt.datetime.max
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None) if when.tzinfo else when


def _from_cache(key: CacheKey, row: dict[str, Any]) -> EnrichResult:
    output = json.loads(row["output_json"]) if row.get("output_json") else None
    choices = output.pop(CHOICES_KEY, None) if isinstance(output, dict) else None
    return EnrichResult("", *key, status=row["status"], output=output, raw_text=row.get("raw_text") or "",
                        error=row.get("error"), from_cache=True, prompt_tokens=int(row.get("prompt_tokens") or 0),
                        completion_tokens=int(row.get("completion_tokens") or 0), seconds=float(row.get("seconds") or 0.0),
                        choices=choices)


def _from_generation(key: CacheKey, generation: Generation) -> EnrichResult:
    return EnrichResult("", *key, status=generation.status, output=generation.output, raw_text=generation.raw_text,
                        error=generation.error, from_cache=False, prompt_tokens=generation.prompt_tokens,
                        completion_tokens=generation.completion_tokens, seconds=generation.seconds,
                        choices=generation.choices)

