"""Candidates fanned out by user shard: one step per shard writes Parquet, one serialised step stages them all."""

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import duckdb
import polars as pl

from assets.common import WRITES_TAG
from assets.serving import STAGING, promoted_model, serving_inputs
from models.candidates import COLUMNS, ServingInputs, generate
from models.two_tower import TwoTowerModel
from assets.partitions import events_partitions
from assets.resources import Crossfade, Warehouse
from warehouse.settings import Settings
from pipelines.shards import DEFAULT_SHARDS, assign_shards, shard_key
from quality import check
from warehouse import exchange
from warehouse.store import run_sql, sql_text



@dataclass(frozen=True)
class ShardServingInputs(ServingInputs):
    """ServingInputs whose active users are one shard's; catalogue, popularity and item vectors stay global.

    `generate` scores exactly `active_users()`, so restricting that one method gives each user the list the
    single-process run gives them, while every shard still sees the whole history behind popularity.
    """

    shard: int = 0
    shards: int = 1

    def active_users(self) -> pl.Series:
        users = super().active_users()
        return users.filter(assign_shards(users, self.shards) == self.shard)


@dataclass(frozen=True)
class ServingState:
    """What every shard step reads from the published warehouse: inputs and the promoted model."""

    inputs: ServingInputs
    model: TwoTowerModel | None  # None before any promotion: every list is the popularity fallback
    model_version: str


def serving_state(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: dt.date) -> ServingState:
    """The promoted model and the feature inputs for `as_of`, as the single-process staging asset reads them."""
    promoted = promoted_model(con, settings)
    inputs, _ = serving_inputs(con, settings, as_of, promoted[2] if promoted else None)
    return ServingState(inputs, promoted[1] if promoted else None, promoted[0] if promoted else "none")


def shard_candidates(state: ServingState, index: int, shards: int) -> Iterator[pl.DataFrame]:
    """Candidate rows (models.candidates.COLUMNS) of the active users in shard `index` of `shards`."""
    fields = {field.name: getattr(state.inputs, field.name) for field in dataclasses.fields(ServingInputs)}
    inputs = ShardServingInputs(**fields, shard=index, shards=shards)
    return generate(inputs, state.model, state.model_version)


def write_shard(uri: str, state: ServingState, index: int, shards: int) -> int:
    """Score one shard and write it to the exchange, replacing an earlier try; the rows written."""
    con = duckdb.connect()
    try:
        return exchange.write_candidate_shard(con, uri, state.inputs.as_of, index, shards,
                                              shard_candidates(state, index, shards), COLUMNS)
    finally:
        con.close()


@dataclass(frozen=True)
class LoadedShards:
    """What one load staged for its as-of day."""

    rows: int
    users: int
    fallback_users: int
    shards: int


def load_shards(con: duckdb.DuckDBPyConnection, uri: str, as_of: dt.date, shards: int) -> LoadedShards:
    """Replace the as-of day's rows of serving.candidates_staging by the union of its shards, in one transaction.

    Refuses (exchange.ExchangeError) an incomplete set: a missing, duplicated or stale shard, or a user in two.
    """
    relation = exchange.read_candidate_shards(con, uri, as_of, shards)
    con.execute(sql_text("serving/tables"))
    con.begin()
    try:
        run_sql(con, "serving/candidates_staging_clear", {"as_of": as_of})
        con.register("chunk", relation)  # the relation the staging insert reads, as for single-process chunks
        run_sql(con, "serving/candidates_staging_insert", {"as_of": as_of})
        con.unregister("chunk")
        con.commit()
    except BaseException:
        con.rollback()
        raise
    rows, users, fallback_users = con.execute(
        "select count(*), count(distinct user_id), count(distinct user_id) filter (where is_fallback) "
        "from serving.candidates_staging where as_of = $as_of", {"as_of": as_of}).fetchall()[0]
    return LoadedShards(rows, users, fallback_users, shards)


def _exchange_uri(settings: Settings) -> str:
    uri = settings.exchange_uri
    if not uri:
        raise dg.Failure("candidate shards need an exchange: set CROSSFADE_EXCHANGE_URI (exchange_uri) to a "
                         "directory or an s3://, gs:// or az:// prefix every shard step can reach")
    return uri


def _score_op(index: int, shards: int) -> dg.OpDefinition:
    key = shard_key(index, shards)

    @dg.op(name=f"candidates_{key.replace('-', '_')}", out=dg.Out(dg.Nothing),
           description=f"Candidates of the active users in user shard {key}, written to the Parquet exchange.")
    def score(context: dg.OpExecutionContext, crossfade: Crossfade, warehouse: Warehouse) -> None:
        settings = crossfade.settings()
        uri = _exchange_uri(settings)
        with warehouse.read() as con:
            as_of = crossfade.as_of(context, con)
            state = serving_state(con, settings, as_of)
        started = time.perf_counter()
        rows = write_shard(uri, state, index, shards)
        context.log.info(f"{exchange.shard_uri(uri, as_of, index, shards)}: {rows:,} rows from model "
                         f"{state.model_version} in {time.perf_counter() - started:.1f} s")

    return score


def _load_op(shards: int) -> dg.OpDefinition:
    @dg.op(name="candidates_load_shards", ins={"scored": dg.In(dg.Nothing)}, tags=WRITES_TAG,
           description="Every shard of the as-of day into serving.candidates_staging, then the staging gate.")
    def load(context: dg.OpExecutionContext, crossfade: Crossfade, warehouse: Warehouse) -> None:
        uri = _exchange_uri(crossfade.settings())
        with warehouse.write() as con:
            as_of = crossfade.as_of(context, con)
            try:
                loaded = load_shards(con, uri, as_of, shards)
            except exchange.ExchangeError as error:
                raise dg.Failure(str(error)) from error
        with warehouse.read() as con:
            report = check(con, STAGING, crossfade.thresholds((as_of,)))
        metadata = {"dagster/row_count": loaded.rows, "as_of": as_of.isoformat(), "users": loaded.users,
                    "fallback_users": loaded.fallback_users, "shards": loaded.shards,
                    "gate_passed": report.success, "gate": dg.MetadataValue.md(report.markdown())}
        context.log_event(dg.AssetMaterialization(asset_key=["serving", "candidates_staging"],
                                                  partition=context.partition_key, metadata=metadata))
        if not report.success:
            raise dg.Failure(f"{STAGING} {as_of}: {len(report.failed)} expectation(s) failed; nothing is published",
                             metadata={"details": dg.MetadataValue.md(report.markdown())})
        context.log.info(f"{STAGING} {as_of}: {loaded.rows:,} rows for {loaded.users:,} users from {shards} shards")

    return load


def candidate_shards_job(shards: int = DEFAULT_SHARDS) -> dg.JobDefinition:
    """Partition K: `shards` scoring steps (one pod each on the k8s executor), then the serialised load and gate.

    Publishing stays with the serving/candidates asset: materialise it for K once this job has passed.
    """
    load = _load_op(shards)
    scorers = [_score_op(index, shards) for index in range(shards)]

    @dg.job(name="candidate_shards", partitions_def=events_partitions,
            description=f"serving.candidates_staging for as-of K + 1 from {shards} user shards exchanged as Parquet "
                        "(CROSSFADE_EXCHANGE_URI); then materialise serving/candidates to publish.")
    def candidate_shards() -> None:
        load([score() for score in scorers])

    return candidate_shards
