"""Benchmark LLM enrichment: item topics, user profiles and judge verdicts per second, in-process vs over a server.

The bundled SmolLM2 answers the same requests four ways: in this process (models.llm.LocalLlama; concurrency 4 is
four llama contexts, one call each at a time) and behind `python -m llama_cpp.server` started here on a free
localhost port (models.llm.OpenAICompatible with response_format json_object), each at concurrency 1 and 4,
through models.enrichment.run_batch with an empty cache, so every input reaches the model once. The inputs come
from a small simulated world: its catalogue rows as the item_topics asset reads them, listening facts per user
built from raw.events the way enrich/user_facts.sql builds them (genres mapped by the topic taxonomy as item
topics), and pointwise judge requests (a user's facts-only profile and one audiobook). Model loading is left out.
The RESULT line: ours = item topics per second over the server at concurrency 4, baseline = in-process at 1.
"""
from pathlib import Path
import argparse
import datetime as dt
import itertools
import os
import queue
import sys
import tempfile
import time
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl  # noqa: E402

from bench.ingest import ingest_raw  # noqa: E402
from models import judge  # noqa: E402
from models.enrichment import BatchResult, EnrichRequest, MemoryCache, run_batch  # noqa: E402
from models.item_topics import item_request  # noqa: E402
from models.llm import ChatModel, Completion, LocalLlama, Messages, OpenAICompatible  # noqa: E402
from models.topic_taxonomy import taxonomy_topics  # noqa: E402
from models.user_profiles import MAX_ITEMS, TopItem, UserFacts, profile_request  # noqa: E402
from tests.models.llm_server import MODEL_ALIAS, llama_server  # noqa: E402
from warehouse.store import Store  # noqa: E402
from worlds.sample import WorldConfig, simulate  # noqa: E402

END_DATE = dt.date(2026, 1, 31)
ITEM_TYPES = ("music", "podcast", "audiobook")
N_CTX = 2048  # LocalLlama's default; the server gets the same
MODES = (("in-process", 1), ("in-process", 4), ("server", 1), ("server", 4))
KINDS = {"items": "item topics", "profiles": "user profiles", "judgements": "pointwise judgements"}
TOP_TOPICS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--items-per-type", type=int, default=12, help="6 per simulated topic")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--items", type=int, default=12, help="item topic requests per measurement")
    parser.add_argument("--profiles", type=int, default=8, help="user profile requests per measurement")
    parser.add_argument("--judgements", type=int, default=12, help="pointwise judge requests per measurement")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads of each context and of the server")
    parser.add_argument("--quick", action="store_true", help="4 requests of each kind: 5-10 min on a busy 2-core host")
    args = parser.parse_args()
    if args.quick:
        args.items = args.profiles = args.judgements = 4
    print(f"{os.cpu_count()} cores, load {_load()} at start; llama.cpp threads {args.threads}, n_ctx {N_CTX}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="crossfade-bench-enrich-") as tmp:
        requests = _inputs(Path(tmp), args)
        started = time.perf_counter()
        contexts = [LocalLlama(n_ctx=N_CTX, n_threads=args.threads) for _ in range(max(c for _, c in MODES))]
        print(f"loaded {len(contexts)} in-process contexts in {time.perf_counter() - started:.1f} s", flush=True)
        with llama_server(Path(tmp) / "server.log", n_threads=args.threads, n_ctx=N_CTX) as server:
            rows = []
            for kind, batch in requests.items():
                for backend, concurrency in MODES:
                    if backend == "in-process":
                        model: ChatModel = contexts[0] if concurrency == 1 else LocalPool(contexts[:concurrency])
                        rows.append(_measure(kind, backend, concurrency, model, batch, MemoryCache()))
                        continue
                    with OpenAICompatible(server.base_url, MODEL_ALIAS, response_format="json_object",
                                          timeout_s=600, max_concurrency=concurrency) as http:
                        cache = MemoryCache()
                        rows.append(_measure(kind, backend, concurrency, http, batch, cache))
                        if kind == "items" and concurrency == 4:
                            again = run_batch(http, batch, cache, budget=len(batch))
            answered = server.chat_requests()
    print(f"load {_load()} at the end; the server answered {len(answered)} chat requests, "
          f"{sum(status != 200 for _, status in answered)} of them not with 200")
    _report(rows, again)


class LocalPool:
    """Several in-process llama contexts as one ChatModel: one call per context at a time (LocalLlama's limit)."""

    def __init__(self, contexts: Sequence[LocalLlama]) -> None:
        self.name = contexts[0].name
        self.max_concurrency = len(contexts)
        self._free: queue.Queue[LocalLlama] = queue.Queue()
        for context in contexts:
            self._free.put(context)

    def complete(self, messages: Messages, schema: dict[str, Any], **options: Any) -> Completion:
        context = self._free.get()
        try:
            return context.complete(messages, schema, **options)
        finally:
            self._free.put(context)


def _inputs(tmp: Path, args: argparse.Namespace) -> dict[str, list[EnrichRequest]]:
    """Item topic, user profile and pointwise judge requests from a simulated world's raw tables."""
    config = WorldConfig(users=args.users, days=args.days, seed=args.seed, end_date=END_DATE,
                         topics=max(1, args.items_per_type // 6),  # the simulator wants 6 items per topic and type
                         items_per_type=dict.fromkeys(ITEM_TYPES, args.items_per_type))
    simulate(config, tmp / "landing")
    with Store(tmp / "crossfade.duckdb").write() as con:
        ingest_raw(con, tmp / "landing")
        items = con.execute("select * from raw.items order by item_type, item_id").pl()
        events = con.execute(
            "select e.user_id, e.item_id, e.event_type, e.ms_played, e.ts, i.title, i.item_type, i.genres, "
            "i.duration_ms from raw.events as e inner join raw.items as i using (item_id)"
        ).pl()
    users = _user_facts(events)
    catalogue = items.filter(pl.col("item_type") != "music").to_dicts()  # graph and target types, podcasts first
    books = items.filter(pl.col("item_type") == "audiobook").to_dicts()
    pairs = list(itertools.product(users, books))
    pairs = pairs[:: max(1, len(pairs) // args.judgements)][: args.judgements]
    requests = {
        "items": [item_request(row) for row in _spread(catalogue, args.items)],
        "profiles": [profile_request(facts) for facts in users[: args.profiles]],
        "judgements": [judge.pointwise_request(facts.user_id, judge.profile_text(None, facts.model_dump_json()), book)
                       for facts, book in pairs],
    }
    short = {kind: (len(batch), wanted) for kind, batch, wanted in
             zip(requests, requests.values(), (args.items, args.profiles, args.judgements)) if len(batch) < wanted}
    if short:
        raise SystemExit(f"the world is too small for the requests asked (kind: (made, asked)) {short}; "
                         "raise --users or --items-per-type")
    print(f"world: {args.users} users, {items.height} items, {events.height:,} events over {args.days} days; "
          + ", ".join(f"{len(batch)} {KINDS[kind]}" for kind, batch in requests.items()), flush=True)
    return requests


def _spread(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` rows taken evenly through the list (podcasts and audiobooks both, not the first type only)."""
    return [rows[i * len(rows) // count] for i in range(count)] if count <= len(rows) else rows


def _user_facts(events: pl.DataFrame) -> list[UserFacts]:
    """UserFacts per user from raw events joined to items, most active first (enrich/user_facts.sql's shape)."""
    play = pl.col("event_type") == "play"
    engaged = events.group_by("user_id", "item_id", "title", "item_type", "genres").agg(
        play.sum().alias("plays"), pl.len().alias("events"), pl.col("ms_played").sum().alias("ms_played"),
        (pl.col("ms_played") / pl.col("duration_ms")).max().clip(0.0, 1.0).fill_null(0.0).alias("completion_rate"),
    )
    days = events.group_by("user_id").agg(
        pl.col("ts").dt.date().n_unique().alias("active_days"), play.sum().alias("plays"), pl.len().alias("events"),
        (pl.col("ts").dt.hour() // 6).mode().first().alias("quarter"),
    ).sort("events", "user_id", descending=[True, False])
    facts = []
    for user in days.iter_rows(named=True):
        mine = engaged.filter(pl.col("user_id") == user["user_id"]).sort(
            "ms_played", "events", "item_id", descending=[True, True, False])
        plays = mine.group_by("item_type").agg(pl.col("plays").sum())
        total = max(int(plays["plays"].sum()), 1)
        weights: dict[str, int] = {}
        top = []
        for item in mine.iter_rows(named=True):
            topics = taxonomy_topics(item["genres"])
            for topic in topics:
                weights[topic] = weights.get(topic, 0) + item["events"]
            if len(top) < MAX_ITEMS:
                top.append(TopItem(title=item["title"] or item["item_id"], item_type=item["item_type"],
                                   completion_rate=round(item["completion_rate"], 3), topics=topics))
        if not top:
            continue
        facts.append(UserFacts(
            user_id=user["user_id"],
            type_shares={kind: round(count / total, 4) for kind, count in plays.iter_rows() if count},
            top_topics=sorted(weights, key=lambda topic: (-weights[topic], topic))[:TOP_TOPICS],
            active_days=user["active_days"], plays_per_active_day=round(user["plays"] / user["active_days"], 2),
            peak_time_of_day=("night", "morning", "afternoon", "evening")[user["quarter"]], top_items=top,
        ))
    return facts


def _measure(kind: str, backend: str, concurrency: int, model: ChatModel, requests: list[EnrichRequest],
             cache: MemoryCache) -> dict[str, Any]:
    # llama-cpp-python (verbose=False) points fds 1 and 2 and sys.stdout/stderr at /dev/null around each chat call
    # and back; contexts called from several threads interleave that and can leave all later output in /dev/null
    streams, files = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    try:
        batch = run_batch(model, requests, cache, budget=len(requests))
    finally:
        sys.stdout, sys.stderr = files  # swapped for /dev/null files the same way
        for saved, fd in zip(streams, (1, 2)):
            os.dup2(saved, fd)
            os.close(saved)
    row = {
        "kind": kind, "backend": backend, "concurrency": concurrency, "inputs": len(batch.results),
        "calls": batch.calls, "attempts": batch.attempts, "failures": batch.failures,
        "backend_errors": batch.backend_errors, "seconds": batch.seconds, "per_s": len(batch.results) / batch.seconds,
        "tokens_out": batch.completion_tokens, "latency": sum(r.seconds for r in batch.results) / len(batch.results),
    }
    print(f"{KINDS[kind]:<21} {backend:<10} c={concurrency}: {row['per_s']:6.3f}/s  {batch.seconds:6.1f} s  "
          f"{batch.attempts} calls, {batch.failures} failed, {batch.backend_errors} endpoint errors, "
          f"{batch.completion_tokens} tokens out, {row['latency']:.1f} s a request from sent to answered", flush=True)
    return row


def _report(rows: list[dict[str, Any]], again: BatchResult) -> None:
    print()
    print("| requests | " + " | ".join(f"{backend} c={concurrency}" for backend, concurrency in MODES) + " |")
    print("| --- |" + " ---: |" * len(MODES))
    for kind, label in KINDS.items():
        cells = [next(r for r in rows if (r["kind"], r["backend"], r["concurrency"]) == (kind, *mode))
                 for mode in MODES]
        n = cells[0]["inputs"]
        print(f"| {label} ({n}) /s | " + " | ".join(
            f"{c['per_s']:.3f}" + (f" ({c['failures']} failed)" if c["failures"] else "") for c in cells) + " |")
    tokens = []
    for mode in MODES:
        mine = [r for r in rows if (r["backend"], r["concurrency"]) == mode]
        tokens.append(sum(r["tokens_out"] for r in mine) / sum(r["seconds"] for r in mine))
    print("| tokens out /s, all kinds | " + " | ".join(f"{rate:.1f}" for rate in tokens) + " |")
    print()
    print(f"item topics again from the cache (server c=4): {again.calls} calls, {again.cache_hits} hits, "
          f"{len(again.results) / again.seconds:,.0f} items/s")
    ours = _rate(rows, "items", "server", 4)
    baseline = _rate(rows, "items", "in-process", 1)
    print(f"RESULT enrich ours={ours:.4f} baseline={baseline:.4f} ratio={ours / baseline:.3f} unit=items/s")


def _rate(rows: list[dict[str, Any]], kind: str, backend: str, concurrency: int) -> float:
    return next(r["per_s"] for r in rows if (r["kind"], r["backend"], r["concurrency"]) == (kind, backend, concurrency))


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
