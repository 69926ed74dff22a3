"""The candidate_shards job: one step per user shard scores that shard's users into the Parquet exchange.

The steps write no table. serving/candidates_staging, run with config {shards: N}, stages the shards and
its gate checks them; serving/candidates publishes them (deploy/k8s/README.md has the flow).
"""

import time

import dagster as dg
import duckdb

from assets.partitions import events_partitions
from assets.resources import Crossfade, Warehouse
from assets.serving import promoted_model, routes, serving_inputs
from models.candidates import COLUMNS, generate
from warehouse import exchange

DEFAULT_SHARDS = 16  # 1M users -> about 62k per shard: one pod scores its users against the catalogue in minutes


def _score_op(index: int, shards: int) -> dg.OpDefinition:
    @dg.op(name=f"candidates_shard_{index:02d}_of_{shards:02d}",
           description=f"Candidates of the active users in user shard {index} of {shards}, written to the "
                       "Parquet exchange.")
    def score(context: dg.OpExecutionContext, crossfade: Crossfade, warehouse: Warehouse) -> None:
        settings = crossfade.settings()
        if not settings.exchange_uri:  # fail before reading every feature frame
            raise dg.Failure("candidate shards need an exchange: set CROSSFADE_EXCHANGE_URI (exchange_uri) to a "
                             "directory or an s3://, gs:// or az:// prefix every shard step can reach")
        with warehouse.read() as con:
            as_of = crossfade.as_of(context, con)
            promoted = promoted_model(con, settings)
            inputs, _ = serving_inputs(con, settings, as_of, promoted.hgnn_embeddings if promoted else None)
        model_version, model = (promoted.model_version, promoted.two_tower) if promoted else ("none", None)
        started = time.perf_counter()
        with duckdb.connect() as scratch:
            rows = exchange.write_candidate_shard(scratch, settings.exchange_uri, as_of, index, shards,
                                                  generate(inputs, model, model_version, shard=(index, shards),
                                                           routed=routes(inputs, promoted, settings)),
                                                  COLUMNS)
        context.log.info(f"{exchange.shard_uri(settings.exchange_uri, as_of, index, shards)}: {rows:,} rows from "
                         f"model {model_version} in {time.perf_counter() - started:.1f} s")

    return score


def candidate_shards_job(shards: int = DEFAULT_SHARDS) -> dg.JobDefinition:
    """Partition K: `shards` independent scoring steps (one pod each on the k8s executor) for as-of K + 1."""
    scorers = [_score_op(index, shards) for index in range(shards)]

    @dg.job(name="candidate_shards", partitions_def=events_partitions,
            description=f"Candidate lists for as-of K + 1 scored in {shards} user shards and written as Parquet to "
                        f"the exchange (CROSSFADE_EXCHANGE_URI); then materialise serving/candidates_staging with "
                        f"config {{shards: {shards}}} and serving/candidates to stage, gate and publish them.")
    def candidate_shards() -> None:
        for score in scorers:
            score()

    return candidate_shards
