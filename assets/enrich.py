"""Enrichment stage: floor topics and template profiles for everyone, the LLM's on top (cached, within a budget,
round-robin), then text vectors."""

import datetime as dt
import functools
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl
import pyarrow as pa

from assets.common import WAREHOUSE_POOL, gate, markdown_table
from assets.llm_calls import ask, known_answers
from assets.resources import Crossfade, LLMBackend, Warehouse
from models import item_topics, llm_quality, profile_template, topic_taxonomy, user_profiles
from models.enrichment import BatchResult
from models.text_embed import ENCODER_NAME, embed_changed, encode, load_encoder
from models.torch_threads import torch_threads
from quality import enrich_suites
from warehouse import enrichment_tables as tables
from warehouse.llm_cache import LLMCache
from warehouse.settings import Settings

if TYPE_CHECKING:
    import duckdb
    from sentence_transformers import SentenceTransformer

ENTITIES = ("item", "user")


@functools.cache
def _encoder() -> "SentenceTransformer":
    return load_encoder()  # seconds to load; shared by every run in this process


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)  # tables hold naive UTC timestamps


def _llm_metadata(batch: BatchResult, left: int, budget: int, model_name: str, llm: LLMBackend) -> dict[str, Any]:
    return {
        **batch.metadata(), "left_for_next_run": left, "budget": budget, "llm_model": model_name, **llm.describe(),
        "seconds_per_call": round(batch.seconds / batch.calls, 2) if batch.calls else 0.0,
    }


def _item_quality(con: "duckdb.DuckDBPyConnection", requested: pl.DataFrame, settings: Settings, model_name: str
                  ) -> list[llm_quality.Measure]:
    version = item_topics.PROMPT_VERSION
    return [
        llm_quality.topic_accuracy(tables.item_answers(con, requested, model_name, version),
                                   settings.llm_min_topic_accuracy),
        llm_quality.json_validity(llm_quality.ITEM_TOPICS, tables.answer_statuses(con, model_name, version),
                                  settings.llm_min_json_validity),
    ]


def _profile_quality(con: "duckdb.DuckDBPyConnection", facts: pa.Table, requested: pl.DataFrame, settings: Settings,
                     model_name: str) -> list[llm_quality.Measure]:
    version = user_profiles.PROMPT_VERSION
    return [
        llm_quality.profile_faithfulness(tables.profile_answers(con, facts, requested, model_name, version),
                                         settings.llm_min_profile_faithfulness),
        llm_quality.json_validity(llm_quality.USER_PROFILES, tables.answer_statuses(con, model_name, version),
                                  settings.llm_min_json_validity),
    ]


def _quality_metadata(context: dg.AssetExecutionContext, table: str, measures: list[llm_quality.Measure]
                      ) -> dict[str, Any]:
    """The kind's measures and decision, logged and as metadata: whether downstream reads the LLM's output, and why."""
    is_used, reason = llm_quality.decision(measures)
    context.log.info(f"{table}: {reason}")
    frame = pl.DataFrame([{"metric": m.metric, "value": None if m.value is None else round(m.value, 3),
                           "answers": m.count_answers, "floor": m.floor, "passed": m.passed, "reason": m.reason}
                          for m in measures])
    return {
        "llm_output_used": is_used, "llm_decision": reason,
        **{m.metric: None if m.value is None else round(m.value, 4) for m in measures},
        **{f"{m.metric}_answers": m.count_answers for m in measures},
        "llm_quality": dg.MetadataValue.md(markdown_table(frame, max_chars=160)),
    }


def _log(context: dg.AssetExecutionContext, table: str, batch: BatchResult, left: int) -> None:
    context.log.info(
        f"{table}: {batch.calls} LLM calls, {batch.cache_hits} cache hits, {batch.failures} failed, "
        f"{batch.backend_errors} endpoint errors, {len(batch.deferred)} over budget; {left} pending for the next run "
        f"({batch.seconds:.1f} s)"
    )


@dg.asset(pool=WAREHOUSE_POOL, key=["enrich", "item_topics"], deps=[["raw", "items"], ["features", "item_stats"]], group_name="enrich",
          kinds={"duckdb"})
def enrich_item_topics(
    context: dg.AssetExecutionContext, crossfade: Crossfade, warehouse: Warehouse, llm: LLMBackend
) -> dg.MaterializeResult:
    """Topics for every item of the graph and target types: the floor, then the LLM's where it answered.

    The floor needs no LLM: genres mapped through the taxonomy of models/topic_taxonomy.py, else MiniLM
    zero-shot of title and description against the topics' descriptions. LLM answers are cached on the
    item's text; at most llm_call_budget new inputs are asked per run, never or least recently attempted
    first. Each run measures the LLM's topic accuracy on unambiguous items and its JSON validity
    (models/llm_quality.py, written to enrich.llm_quality); `topics` is the LLM's when its answer is ok and both
    passed their floors (llm_min_topic_accuracy, llm_min_json_validity), else the floor's (`topics_source`,
    `topics_reason`).
    """
    settings = crossfade.settings()
    item_types = sorted(set(settings.graph_types) | {settings.target_type})
    with warehouse.read() as con:
        queue = tables.item_queue(con, item_types)
    rows_in = list(queue.iter_rows(named=True))
    floors = topic_taxonomy.refresh_floors(rows_in, lambda texts: encode(_encoder(), texts))
    with llm.chat_model() as model:
        requests = [item_topics.item_request(row) for row in rows_in]
        cache = known_answers(warehouse, model, requests)
        batch = ask(model, requests, cache, settings, warehouse)
        model_name = model.name
    requested = tables.stamp_attempts(queue.select("item_id", "item_type", "last_attempted_at").with_columns(
        input_hash=pl.Series([request.input_hash for request in requests], dtype=pl.String),
        floor_topics=pl.Series(floors.topics, dtype=pl.List(pl.String)),
        floor_source=pl.Series(floors.sources, dtype=pl.String),
        floor_hash=pl.Series(floors.hashes, dtype=pl.String),
    ), "item_id", batch.attempted_ids, _now())
    with warehouse.write("enrich.item_topics") as con:
        LLMCache(con).put_many(cache.new_rows)
        measures = _item_quality(con, requested, settings, model_name)
        measured = llm_quality.quality_rows(measures, model_name, item_topics.PROMPT_VERSION, _now())
        rows = tables.write_item_topics(con, requested, measured, model_name, item_topics.PROMPT_VERSION)
        by_source = con.execute(
            "select topics_source, status, count(*) as items from enrich.item_topics group by all order by all").pl()
        sample = con.execute(
            "select item_id, item_type, status, topics_source, topics, floor_topics, llm_topics, summary, "
            "topics_reason "
            "from enrich.item_topics order by status = 'ok' desc, item_id limit 5"
        ).pl()
    left = int(by_source.filter(pl.col("status") == "pending")["items"].sum())
    _log(context, "enrich.item_topics", batch, left)
    context.log.info(f"enrich.item_topics: floor topics for {rows:,} items ({floors.count_computed:,} computed, "
                     f"{floors.sources.count('zero_shot'):,} by zero-shot)")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, **_llm_metadata(batch, left, settings.llm_call_budget, model_name, llm),
        "floor_taxonomy": floors.sources.count("taxonomy"), "floor_zero_shot": floors.sources.count("zero_shot"),
        "floor_computed": floors.count_computed, **_quality_metadata(context, "enrich.item_topics", measures),
        "items_by_source": dg.MetadataValue.md(markdown_table(by_source)),
        "preview": dg.MetadataValue.md(markdown_table(sample)),
    })


@dg.asset(pool=WAREHOUSE_POOL, key=["enrich", "user_profiles"],
          deps=[["features", "user_stats"], ["features", "interactions"], enrich_item_topics], group_name="enrich",
          kinds={"duckdb"})
def enrich_user_profiles(
    context: dg.AssetExecutionContext, crossfade: Crossfade, warehouse: Warehouse, llm: LLMBackend
) -> dg.MaterializeResult:
    """Listening facts for every user (SQL over the train period), a template profile for every user with
    listening, and, within the LLM budget, a narrative.

    Both follow the judge paper's seven-key JSON; the template is written from the facts alone, every night.
    Narratives are cached on the user's coarse signature (top topics, top items, rounded type shares), so a
    user whose counts move keeps theirs; new ones are asked never or least recently attempted users first.
    Each run measures the narratives' faithfulness to the facts and their JSON validity (models/llm_quality.py,
    written to enrich.llm_quality); `profile_json` is the narrative when it is ok and usable and both passed
    their floors (llm_min_profile_faithfulness, llm_min_json_validity), else the template (`profile_source`,
    `profile_reason`).
    """
    settings = crossfade.settings()
    with llm.chat_model() as model:
        with warehouse.read() as con:
            facts = tables.user_facts(con, user_profiles.MAX_ITEMS)
            queue = tables.user_queue(con, facts)
        users = [user_profiles.UserFacts.model_validate_json(text) for text in queue["facts_json"]]
        requests = [user_profiles.profile_request(user) for user in users]
        cache = known_answers(warehouse, model, requests)
        batch = ask(model, requests, cache, settings, warehouse)
        model_name = model.name
    columns = pl.DataFrame(profile_template.profile_columns(users, requests, batch),
                           schema={"input_hash": pl.String, "signature": pl.String, "template_json": pl.String,
                                   "is_narrative_usable": pl.Boolean})
    requested = tables.stamp_attempts(queue.select("user_id", "last_attempted_at").hstack(columns), "user_id",
                                      batch.attempted_ids, _now())
    with warehouse.write("enrich.user_profiles") as con:
        LLMCache(con).put_many(cache.new_rows)
        measures = _profile_quality(con, facts, requested, settings, model_name)
        measured = llm_quality.quality_rows(measures, model_name, user_profiles.PROMPT_VERSION, _now())
        rows = tables.write_user_profiles(con, facts, requested, measured, model_name, user_profiles.PROMPT_VERSION)
        by_status = con.execute(
            "select profile_source, status, count(*) as users from enrich.user_profiles group by all order by all").pl()
        sample = con.execute(
            "select user_id, status, profile_source, top_topics, interests, profile_json "
            "from enrich.user_profiles order by profile_source = 'llm' desc, count_events desc, user_id limit 5"
        ).pl()
    left = int(by_status.filter(pl.col("status") == "pending")["users"].sum())
    _log(context, "enrich.user_profiles", batch, left)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, "users_with_listening": queue.height,
        "narratives_used": int(by_status.filter(pl.col("profile_source") == "llm")["users"].sum()),
        "narratives_not_used": int(  # valid JSON, but unusable or its kind below the floors: the template is read
            by_status.filter((pl.col("status") == "ok") & (pl.col("profile_source") == "template"))["users"].sum()),
        **_quality_metadata(context, "enrich.user_profiles", measures),
        **_llm_metadata(batch, left, settings.llm_call_budget, model_name, llm),
        "users_by_status": dg.MetadataValue.md(markdown_table(by_status)),
        "preview": dg.MetadataValue.md(markdown_table(sample, max_chars=120)),
    })


@dg.asset(pool=WAREHOUSE_POOL, key=["enrich", "text_embeddings"], deps=[["raw", "items"], enrich_item_topics, enrich_user_profiles],
          group_name="enrich", kinds={"duckdb"})
def enrich_text_embeddings(
    context: dg.AssetExecutionContext, crossfade: Crossfade, warehouse: Warehouse
) -> dg.MaterializeResult:
    """all-MiniLM-L6-v2 vectors (384, unit length) of every item and every user with listening.

    Items read title, description and LLM topics where present; users read their facts and narrative.
    Only texts that changed since the stored vector are encoded again, with llm_threads torch threads.
    Every item is encoded; users at most embed_user_budget a run (users without a vector first, then
    the longest-stale), and the rest keep their previous vector until a later run.
    """
    settings = crossfade.settings()
    limits = {"item": None, "user": settings.embed_user_budget}
    with warehouse.read() as con:
        inputs = tables.embedding_inputs(con)
        stored = {entity: (tables.stored_hashes(con, entity), tables.encoded_times(con, entity)) for entity in ENTITIES}
    encoder = _encoder()
    parts, counts, seconds = [], {}, 0.0
    for entity in ENTITIES:
        texts = inputs.filter(pl.col("entity") == entity)
        hashes, encoded_at = stored[entity]
        with torch_threads(settings.llm_threads):
            result = embed_changed(encoder, texts["entity_id"].to_list(), texts["text"].to_list(), hashes,
                                   limit=limits[entity], encoded_at=encoded_at)
        parts.append(tables.encoded_rows(entity, result.ids, result.input_hashes, result.embeddings, ENCODER_NAME))
        counts[f"encoded_{entity}s"] = len(result.ids)
        counts[f"skipped_{entity}s"] = result.count_skipped
        seconds += result.seconds
        if entity == "user":
            counts["deferred_users"] = result.count_deferred
    encoded = pa.concat_tables(parts)
    with warehouse.write("enrich.text_embeddings") as con:
        rows = tables.write_text_embeddings(con, inputs, encoded)
        sample = con.execute(
            "select entity, entity_id, model, dim, input_hash, list_transform(embedding[1:4], v -> round(v, 4)) as head "
            "from enrich.text_embeddings order by entity, entity_id limit 5"
        ).pl()
    context.log.info(
        f"enrich.text_embeddings: encoded {encoded.num_rows:,} changed texts in {seconds:.1f} s, "
        f"kept {counts['skipped_items'] + counts['skipped_users']:,} unchanged, deferred {counts['deferred_users']:,} "
        f"changed user texts to a later run (embed_user_budget {settings.embed_user_budget:,})"
    )
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, **counts, "seconds": round(seconds, 3),
        "texts_per_s": round(encoded.num_rows / seconds, 1) if encoded.num_rows and seconds else 0.0,
        "embed_user_budget": settings.embed_user_budget, "model": ENCODER_NAME, "dim": enrich_suites.EMBEDDING_DIM,
        "preview": dg.MetadataValue.md(markdown_table(sample)),
    })


@dg.asset_check(asset=enrich_item_topics, blocking=True, name="enrich_item_topics_suite",
                description="Gate: every graph and target item has topics, answers whole, failure rate under the limit.")
def enrich_item_topics_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    limit = crossfade.settings().llm_max_failure_rate
    with warehouse.audit() as con:
        report = enrich_suites.item_topics_suite(con, crossfade.thresholds(), limit)
    return gate(report, warehouse, "enrich.item_topics")


@dg.asset_check(asset=enrich_user_profiles, blocking=True, name="enrich_user_profiles_suite",
                description="Gate: facts for every user, seven profile keys for every active user, failure rate under the limit.")
def enrich_user_profiles_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    limit = crossfade.settings().llm_max_failure_rate
    with warehouse.audit() as con:
        report = enrich_suites.user_profiles_suite(con, crossfade.thresholds(), limit)
    return gate(report, warehouse, "enrich.user_profiles")


@dg.asset_check(asset=enrich_text_embeddings, blocking=True, name="enrich_text_embeddings_suite",
                description="Gate: a finite 384-d unit vector for every item and every active user.")
def enrich_text_embeddings_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.audit() as con:
        report = enrich_suites.text_embeddings_suite(con, crossfade.thresholds())
    return gate(report, warehouse, "enrich.text_embeddings")
