"""Serving stage: nightly candidate lists staged, gated, then published to serving.candidates in one transaction."""

import datetime as dt
from collections.abc import Iterator
import time
from typing import NamedTuple

import dagster as dg
import duckdb
import polars as pl

from assets.common import WAREHOUSE_POOL, gate, markdown_table
from assets.partitions import events_partitions
from assets.resources import Crossfade, Warehouse
from models.bundle import ModelBundle
from models import protocol
from models.candidates import ServingInputs, generate, plan_routes
from models.evaluate import EvaluateConfig
from models.recommender import FeatureFrames
from models.text_features import text_or_hashed
from models.two_tower import TwoTowerModel
from quality import check
from warehouse import exchange, readers, registry
from warehouse.settings import Settings
from warehouse.store import run_sql, scalar, sql_text

STAGING = "serving.candidates_staging"
PUBLISHED = "serving.candidates"


class CandidatesRun(dg.Config):
    chunk_users: int = 0  # 0: retrieval sizes chunks to about 128 MiB of scores per worker
    shards: int = 0  # 0: score here; N: stage the N shard files the candidate_shards job wrote to the exchange
    insert_rows: int = 2_000_000  # candidate rows per insert (and commit); each writes its own Parquet file


class PromotedModel(NamedTuple):
    """The promoted bundle's parts that serving reads."""

    model_version: str
    two_tower: TwoTowerModel
    hgnn_embeddings: pl.DataFrame
    metrics: dict  # the registry row's: the serving plan and the baseline settings chosen on validation


def promoted_model(con: duckdb.DuckDBPyConnection, settings: Settings) -> PromotedModel | None:
    """The promoted bundle's version, two-tower and HGNN item embeddings, or None before any promotion."""
    row = registry.promoted(con)
    if row is None:
        return None
    bundle = ModelBundle.load(row.get("checkpoint_dir") or settings.model_dir(row["model_version"]))
    return PromotedModel(row["model_version"], bundle.two_tower, bundle.hgnn_embeddings, row.get("metrics") or {})


def routes(inputs: ServingInputs, promoted: PromotedModel | None, settings: Settings) -> dict:
    """The promoted plan's slices served by a model other than 2T-HGNN alone (a baseline or the fusion) that
    validated better, with their recommenders."""
    if promoted is None:
        return {}
    config = protocol.tuned(EvaluateConfig(target_type=settings.target_type, graph_types=settings.graph_types,
                                           two_tower=promoted.two_tower.config), promoted.metrics)
    return plan_routes(inputs, promoted.metrics.get("plan"), config, promoted.two_tower)


def serving_inputs(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: dt.date,
                   hgnn_embeddings: pl.DataFrame | None) -> tuple[ServingInputs, str]:
    """Feature frames and embeddings for `as_of` (the text vectors the models stage trains on), and their source."""
    features_as_of = scalar(con, "select max(end_at)::date from features.splits where split = 'holdout'")
    if features_as_of != as_of:
        raise dg.Failure(f"features.* were built for as-of {features_as_of}, candidates are for {as_of}; "
                         "materialise the features/* assets for this partition first")
    frames = FeatureFrames(**readers.feature_tables(con))
    text, source = text_or_hashed(readers.item_text_embeddings(con), frames.items)
    inputs = ServingInputs(frames, text, as_of, settings.target_type, settings.k, hgnn_embeddings,
                           readers.profile_embeddings(con))
    return inputs, source


@dg.asset(
    pool=WAREHOUSE_POOL, key=["serving", "candidates_staging"], partitions_def=events_partitions, group_name="serving", kinds={"duckdb"},
    deps=[["models", "registry"], ["features", "splits"], ["features", "interactions"], ["features", "user_stats"],
          ["features", "item_stats"], ["raw", "items"], ["enrich", "text_embeddings"]],
)
def serving_candidates_staging(context: dg.AssetExecutionContext, config: CandidatesRun, crossfade: Crossfade,
                               warehouse: Warehouse) -> dg.MaterializeResult:
    """Top-K target-type items per active user from the promoted serving plan, staged for the gate.

    Per slice (warm: touched the target type in the window; cold: the rest) the plan's model, the one
    that validated best: 2T-HGNN by exact retrieval over released items the user has not touched, or a
    baseline fitted on the whole window with its validated settings; each row names its model. Streamed
    to DuckDB a chunk of users at a time. Users the model knows nothing about get popularity within their language and genre
    (is_fallback). Before any model is promoted every list is that fallback, flagged, and a warning says so.
    With config `shards` = N the lists come from the candidate_shards job instead: the as-of day's N shard
    files in the Parquet exchange (exchange_uri) are staged in one transaction, only as a complete set.
    """
    settings = crossfade.settings()
    if config.shards:
        return _stage_shards(context, crossfade, warehouse, settings.exchange_uri, config.shards)
    with warehouse.read() as con:
        as_of = crossfade.as_of(context, con)
        promoted = promoted_model(con, settings)
        inputs, text_source = serving_inputs(con, settings, as_of, promoted.hgnn_embeddings if promoted else None)
    if promoted is None:
        context.log.warning("models.registry has no promoted model: every list is the popularity fallback; "
                            "materialise models/registry to promote one")
    model_version, model = (promoted.model_version, promoted.two_tower) if promoted else ("none", None)
    started = time.perf_counter()
    routed = routes(inputs, promoted, settings)
    with warehouse.write(STAGING) as con:
        con.execute(sql_text("serving/tables"))
        # Each insert commits on its own: DuckLake holds a transaction's rows in memory until it commits (at 1M
        # users one transaction for the day took the process past 24 GB). Staged rows reach no reader before
        # the gate, and a retry clears the day's rows first.
        run_sql(con, "serving/candidates_staging_clear", {"as_of": as_of})
        lists = generate(inputs, model, model_version, chunk_users=config.chunk_users or None, routed=routed)
        staged = 0
        for rows in _batched(lists, max(config.insert_rows, 1)):
            con.register("chunk", rows.to_arrow())
            run_sql(con, "serving/candidates_staging_insert", {"as_of": as_of})
            con.unregister("chunk")
            staged += rows.height
            context.log.info(f"{STAGING}: {staged:,} rows staged in {time.perf_counter() - started:.0f} s")
        return _staged(context, con, as_of, time.perf_counter() - started, f"model {model_version}",
                       {"model_version": model_version, "text_embeddings": text_source, "k": settings.k})


@dg.asset_check(asset=serving_candidates_staging, blocking=True, name="serving_candidates_staging_suite",
                description="Gate before publish: K per active user, no duplicates, nothing consumed, "
                            "released catalogue items only, scores descending by rank, catalogue coverage.")
def serving_candidates_staging_gate(context: dg.AssetCheckExecutionContext, crossfade: Crossfade,
                                    warehouse: Warehouse) -> dg.AssetCheckResult:
    return _gate(context, crossfade, warehouse, STAGING)


@dg.asset(pool=WAREHOUSE_POOL, key=["serving", "candidates"], deps=[serving_candidates_staging], partitions_def=events_partitions,
          group_name="serving", kinds={"duckdb"})
def serving_candidates(context: dg.AssetExecutionContext, crossfade: Crossfade,
                       warehouse: Warehouse) -> dg.MaterializeResult:
    """The served lists: the gated staging rows of the as-of date replace that date's lists in one transaction.

    Reads staging at the snapshot its gate published, so only rows that passed the gate are served, whatever
    was staged since (a shard job, a manual materialisation); readers see the old lists or the new ones,
    never a mix, and a failed gate leaves the previous lists in place.
    """
    gated = warehouse.store().published_version(STAGING)
    with warehouse.write(PUBLISHED) as con:
        as_of = crossfade.as_of(context, con)
        con.execute(sql_text("serving/tables"))
        if gated is None:
            raise dg.Failure(f"{STAGING} has never passed its gate: materialise serving/candidates_staging first")
        con.execute(f"create or replace temp view gated_staging as select * from {STAGING} at (version => {int(gated)})")
        if not scalar(con, "select count(*) from gated_staging where as_of = $as_of", {"as_of": as_of}):
            raise dg.Failure(f"no gated lists for {as_of} in {STAGING}: its gate has not passed for that date "
                             "(materialise serving/candidates_staging for it; its check publishes the rows)")
        con.begin()
        try:
            run_sql(con, "serving/candidates_unpublish", {"as_of": as_of})
            run_sql(con, "serving/candidates_publish", {"as_of": as_of})
            con.commit()
        except BaseException:
            con.rollback()
            raise
        rows, users, fallback_users, dates = con.execute(
            "select count(*) filter (where as_of = $as_of), count(distinct user_id) filter (where as_of = $as_of), "
            "count(distinct user_id) filter (where as_of = $as_of and is_fallback), count(distinct as_of) "
            "from serving.candidates", {"as_of": as_of}).fetchall()[0]
        sample = _sample(con, PUBLISHED, as_of)
    context.log.info(f"{PUBLISHED} {as_of}: published {rows:,} rows for {users:,} users")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, "as_of": as_of.isoformat(), "users": users, "fallback_users": fallback_users,
        "as_of_dates_served": dates, "preview": sample,
    })


@dg.asset_check(asset=serving_candidates, blocking=True, name="serving_candidates_suite",
                description="The published lists of the as-of date pass the same suite as staging.")
def serving_candidates_gate(context: dg.AssetCheckExecutionContext, crossfade: Crossfade,
                            warehouse: Warehouse) -> dg.AssetCheckResult:
    return _gate(context, crossfade, warehouse, PUBLISHED)


def _batched(frames: Iterator[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """The frames concatenated into frames of at least `rows` rows (the last may hold fewer), in order."""
    buffer: list[pl.DataFrame] = []
    held = 0
    for frame in frames:
        buffer.append(frame)
        held += frame.height
        if held >= rows:
            yield pl.concat(buffer)
            buffer, held = [], 0
    if buffer:
        yield pl.concat(buffer)


def _stage_shards(context: dg.AssetExecutionContext, crossfade: Crossfade, warehouse: Warehouse, uri: str,
                  shards: int) -> dg.MaterializeResult:
    """The as-of day's rows of serving.candidates_staging replaced by the union of its shards, in one transaction.

    An incomplete set (a missing, duplicated or stale shard, a user in two) fails and leaves the staged rows.
    """
    started = time.perf_counter()
    with warehouse.write(STAGING) as con:
        as_of = crossfade.as_of(context, con)
        try:
            shard_rows = exchange.read_candidate_shards(con, uri, as_of, shards)
        except exchange.ExchangeError as error:
            raise dg.Failure(str(error)) from error
        con.execute(sql_text("serving/tables"))
        con.begin()
        try:
            run_sql(con, "serving/candidates_staging_clear", {"as_of": as_of})
            con.register("chunk", shard_rows)  # the relation the staging insert reads, as for in-process chunks
            run_sql(con, "serving/candidates_staging_insert", {"as_of": as_of})
            con.unregister("chunk")
            con.commit()
        except BaseException:
            con.rollback()
            raise
        model_version = scalar(con, "select coalesce(string_agg(distinct model_version, ', ') filter (where not "
                                    "is_fallback), 'none') from serving.candidates_staging where as_of = $as_of",
                               {"as_of": as_of})
        return _staged(context, con, as_of, time.perf_counter() - started, f"{shards} shards of model {model_version}",
                       {"model_version": model_version, "shards": shards})


def _staged(context: dg.AssetExecutionContext, con: duckdb.DuckDBPyConnection, as_of: dt.date, seconds: float,
            source: str, metadata: dict[str, object]) -> dg.MaterializeResult:
    """The staged day's counts and preview, logged and returned with `metadata` as the asset's metadata."""
    rows, users, fallback_users = con.execute(
        "select count(*), count(distinct user_id), count(distinct user_id) filter (where is_fallback) "
        "from serving.candidates_staging where as_of = $as_of", {"as_of": as_of}).fetchall()[0]
    by_model = con.execute("select coalesce(model, 'unrecorded') as model, count(distinct user_id) as users "
                           "from serving.candidates_staging where as_of = $as_of group by all order by users desc",
                           {"as_of": as_of}).pl()
    context.log.info(f"{STAGING} {as_of}: {rows:,} rows for {users:,} users ({fallback_users:,} fallback) "
                     f"from {source} in {seconds:.1f} s; users by model: "
                     + ", ".join(f"{model} {count:,}" for model, count in by_model.iter_rows()))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, "as_of": as_of.isoformat(), "users": users, "fallback_users": fallback_users,
        "users_by_model": dg.MetadataValue.md(markdown_table(by_model)),
        **metadata, "seconds": round(seconds, 3), "users_per_s": round(users / seconds, 1) if seconds else 0.0,
        "preview": _sample(con, STAGING, as_of),
    })


def _sample(con: duckdb.DuckDBPyConnection, table: str, as_of: dt.date) -> dg.MetadataValue:
    """The top 5 of one cold user (no target-type history) when there is one: what the stage is for."""
    frame = con.execute(
        f"""
        with cold as (
            select c.user_id, coalesce(not s.is_warm, true) as is_cold
            from {table} as c left join features.user_stats as s on c.user_id = s.user_id
            where c.as_of = $as_of
            order by is_cold desc, c.user_id
            limit 1
        )
        select c.user_id, c.rank, c.item_id, i.title, round(c.score, 4) as score, c.explanation, c.is_fallback
        from {table} as c
        inner join cold using (user_id)
        left join raw.items as i on c.item_id = i.item_id
        where c.as_of = $as_of and c.rank <= 5
        order by c.rank
        """, {"as_of": as_of}).pl()
    return dg.MetadataValue.md(markdown_table(frame))


def _gate(context: dg.AssetCheckExecutionContext, crossfade: Crossfade, warehouse: Warehouse,
          table: str) -> dg.AssetCheckResult:
    """The candidates suite on `table`'s lists of the run's as-of date; passing publishes them."""
    with warehouse.audit() as con:
        as_of = crossfade.as_of(context, con)
        report = check(con, table, crossfade.thresholds((as_of,)))
    return gate(report, warehouse, table, {"as_of": as_of.isoformat()})
