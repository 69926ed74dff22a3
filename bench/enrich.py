"""Benchmark enrichment: LLM items/s and profiles/s (bundled SmolLM2), text vectors/s, and the cache on a re-run.

A small simulated world is enriched twice through the Dagster assets with a budget large enough for every
item and user: the first run calls the LLM for each input, the second (nothing changed) must be served from
the cache. The RESULT line compares the item_topics asset's items/s on that unchanged nightly re-run (ours:
cache) with its items/s on the first run (baseline: the plain way, one LLM call per item every night).
A second comparison: batched MiniLM encoding against one text at a time.
"""
from pathlib import Path
import argparse
import datetime as dt
import os
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dagster as dg  # noqa: E402

from bench.ingest import ingest_raw  # noqa: E402
from warehouse.features import FEATURE_TABLES, FeatureParams, build_table  # noqa: E402
from warehouse.store import Store  # noqa: E402
from worlds.sample import WorldConfig, simulate  # noqa: E402

END_DATE = dt.date(2026, 1, 31)
ITEM_TYPES = ("music", "podcast", "audiobook")
STEPS = {"enrich__item_topics": "item_topics", "enrich__user_profiles": "user_profiles",
         "enrich__text_embeddings": "text_embeddings"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--items-per-type", type=int, default=6, help="the simulator's minimum with one topic")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp and torch threads (settings.llm_threads)")
    parser.add_argument("--encode-texts", type=int, default=200, help="texts for batched vs one-at-a-time encoding")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crossfade-bench-enrich-") as tmp:
        home = Path(tmp) / "home"
        _prepare(home, args)
        os.environ.update({
            "CROSSFADE_HOME": str(home), "CROSSFADE_LLM_CALL_BUDGET": "100000", "CROSSFADE_LLM_THREADS": str(args.threads),
            "CROSSFADE_LLM_BACKEND": "local",
            # throughput is measured whatever SmolLM2 answers; the failure rate is printed, not gated
            "CROSSFADE_LLM_MAX_FAILURE_RATE": "1.0",
        })
        first = _enrich("first run (LLM calls)")
        second = _enrich("unchanged re-run")
        single, batched, count = _encoding(home, args)
    _report(first, second, single, batched, count)


def _prepare(home: Path, args: argparse.Namespace) -> None:
    config = WorldConfig(users=args.users, days=args.days, seed=args.seed, end_date=END_DATE, topics=1,
                         items_per_type=dict.fromkeys(ITEM_TYPES, args.items_per_type))
    summary = simulate(config, home / "landing")
    store = Store(home / "warehouse" / "crossfade.duckdb")
    with store.write() as con:
        ingest_raw(con, home / "landing")
        for name in FEATURE_TABLES:
            build_table(con, name, FeatureParams(as_of=END_DATE + dt.timedelta(days=1)))
    print(f"world: {args.users} users, {args.items_per_type} items per type, {summary.clean_events:,} events "
          f"over {args.days} days; llm_threads={args.threads}", flush=True)


def _enrich(label: str) -> dict:
    from assets import enrich
    from assets.resources import Crossfade, LLMBackend, Warehouse

    started = time.perf_counter()
    result = dg.materialize(
        [enrich.enrich_item_topics, enrich.enrich_user_profiles, enrich.enrich_text_embeddings,
         enrich.enrich_item_topics_gate, enrich.enrich_user_profiles_gate, enrich.enrich_text_embeddings_gate],
        resources={"crossfade": Crossfade(), "warehouse": Warehouse(), "llm": LLMBackend()},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    wall = time.perf_counter() - started
    metadata = {
        event.asset_key.path[-1]: {key: value.value for key, value in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }
    steps = {STEPS[event.step_key]: event.event_specific_data.duration_ms / 1000 for event in result.all_events
             if event.event_type_value == "STEP_SUCCESS" and event.step_key in STEPS}
    checks = {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}
    items, profiles, vectors = (metadata[name] for name in ("item_topics", "user_profiles", "text_embeddings"))
    print(f"{label}: {wall:.1f} s; item_topics {items['calls']} calls / {items['cache_hits']} hits in "
          f"{steps['item_topics']:.1f} s; user_profiles {profiles['calls']} calls / {profiles['cache_hits']} hits in "
          f"{steps['user_profiles']:.1f} s; text_embeddings {vectors['encoded_items'] + vectors['encoded_users']} "
          f"encoded in {steps['text_embeddings']:.1f} s; gates {'passed' if all(checks.values()) else checks}",
          flush=True)
    return {"metadata": metadata, "steps": steps, "wall": wall}


def _encoding(home: Path, args: argparse.Namespace) -> tuple[float, float, int]:
    """Seconds to encode the same texts one at a time and batched (64), with the asset's thread count."""
    import torch

    from models.text_embed import encode, load_encoder
    from warehouse.enrichment_tables import embedding_inputs

    with Store(home / "warehouse" / "crossfade.duckdb").read() as con:
        texts = embedding_inputs(con)["text"].to_list()
    texts = (texts * (args.encode_texts // max(len(texts), 1) + 1))[: args.encode_texts]
    encoder = load_encoder()
    torch.set_num_threads(args.threads)
    encode(encoder, texts[:8])  # warm-up
    started = time.perf_counter()
    for text in texts:
        encode(encoder, [text])
    single = time.perf_counter() - started
    started = time.perf_counter()
    encode(encoder, texts)
    batched = time.perf_counter() - started
    return single, batched, len(texts)


def _report(first: dict, second: dict, single: float, batched: float, count: int) -> None:
    items, profiles, vectors = (first["metadata"][name] for name in ("item_topics", "user_profiles", "text_embeddings"))
    again = second["metadata"]
    rows = items["dagster/row_count"]
    asked = again["item_topics"]["calls"] + again["item_topics"]["cache_hits"] + again["user_profiles"]["calls"] \
        + again["user_profiles"]["cache_hits"]
    hits = again["item_topics"]["cache_hits"] + again["user_profiles"]["cache_hits"]
    encoded = vectors["encoded_items"] + vectors["encoded_users"]
    calls_out = again["item_topics"]["calls"] + again["user_profiles"]["calls"]
    encoded_again = again["text_embeddings"]["encoded_items"] + again["text_embeddings"]["encoded_users"]
    print()
    _line(f"LLM items/s (local SmolLM2, {items['calls']} calls)", f"{items['calls'] / items['seconds']:.3f}",
          f"{items['seconds'] / max(items['calls'], 1):.1f} s a call, "
          f"{items['completion_tokens'] / max(items['calls'], 1):.0f} tokens out")
    _line(f"LLM profiles/s (local SmolLM2, {profiles['calls']} calls)", f"{profiles['calls'] / profiles['seconds']:.3f}",
          f"{profiles['seconds'] / max(profiles['calls'], 1):.1f} s a call, "
          f"{profiles['completion_tokens'] / max(profiles['calls'], 1):.0f} tokens out")
    _line("LLM failure rate, first run (items, profiles)", f"{items['failure_rate']:.2f}, {profiles['failure_rate']:.2f}")
    _line(f"text vectors/s in the asset ({encoded} texts, model load excluded)", f"{vectors['texts_per_s']:.1f}")
    _line(f"MiniLM texts/s batched (64) vs one at a time ({count} texts)", f"{count / batched:.1f} vs {count / single:.1f}")
    _line("cache hit rate, unchanged re-run", f"{hits / asked:.3f}",
          f"{hits} of {asked}; {calls_out} LLM calls, {encoded_again} texts encoded")
    ours = rows / second["steps"]["item_topics"]
    baseline = rows / first["steps"]["item_topics"]
    print(f"item_topics asset items/s: re-run {ours:.2f} ({second['steps']['item_topics']:.2f} s) vs first run "
          f"{baseline:.3f} ({first['steps']['item_topics']:.1f} s), {rows} items")
    print(f"RESULT enrich ours={ours:.3f} baseline={baseline:.4f} ratio={ours / baseline:.1f} unit=items/s")


def _line(label: str, value: str, note: str = "") -> None:
    print(f"{label:<64}{value:>14}" + (f"   ({note})" if note else ""))


if __name__ == "__main__":
    main()
