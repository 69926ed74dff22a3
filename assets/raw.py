"""Raw stage: landing files into raw.items, raw.users and daily arrival partitions of raw.events."""

import dagster as dg
import polars as pl

from assets.common import WAREHOUSE_POOL, gate, markdown_table, preview
from assets.partitions import events_partitions
from assets.resources import Crossfade, Warehouse
from quality import check
from warehouse import ingest
from warehouse.landing import parse_partition


def _accounting(result: ingest.IngestResult) -> dict:
    return {
        "read": result.read, "accepted": result.accepted, "rejected": result.rejected,
        "duplicates": result.duplicates, "files": result.files, "seconds": round(result.seconds, 3),
        "rejects_by_reason": dg.MetadataValue.json(result.rejects_by_reason),
    }


@dg.asset(pool=WAREHOUSE_POOL, key=["raw", "items"], group_name="raw", kinds={"duckdb"})
def raw_items(crossfade: Crossfade, warehouse: Warehouse) -> dg.MaterializeResult:
    """The catalogue: the newest record per item_id across landing/items/* (last file by name wins)."""
    settings = crossfade.settings()
    with warehouse.write("raw.items") as con:
        result = ingest.ingest_items(con, settings.landing, settings.item_types)
        by_type = con.execute("select item_type, count(*) as items from raw.items group by 1 order by 1").pl()
        sample = preview(con, "raw.items")
    return dg.MaterializeResult(metadata={
        **_accounting(result), "dagster/row_count": result.accepted,
        "items_by_type": dg.MetadataValue.md(markdown_table(by_type)), "preview": sample,
    })


@dg.asset(pool=WAREHOUSE_POOL, key=["raw", "users"], group_name="raw", kinds={"duckdb"})
def raw_users(crossfade: Crossfade, warehouse: Warehouse) -> dg.MaterializeResult:
    """Users: the newest record per user_id across landing/users/*."""
    with warehouse.write("raw.users") as con:
        result = ingest.ingest_users(con, crossfade.settings().landing)
        sample = preview(con, "raw.users")
    return dg.MaterializeResult(metadata={**_accounting(result), "dagster/row_count": result.accepted, "preview": sample})


@dg.asset(
    pool=WAREHOUSE_POOL, key=["raw", "events"], group_name="raw", kinds={"duckdb"}, deps=[raw_items],
    partitions_def=events_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
)
def raw_events(context: dg.AssetExecutionContext, crossfade: Crossfade, warehouse: Warehouse) -> dg.MaterializeResult:
    """Listening events by arrival day; bad rows go to raw.rejected_events, repeats of an event_id count once.

    Re-running a partition replaces exactly its rows. Each run records read = accepted + rejected +
    duplicates per partition.
    """
    landing = crossfade.settings().landing
    results = []
    with warehouse.write("raw.events") as con:
        # A backfill of many days reads several partitions per transaction (one pass over their files).
        for key, result in ingest.ingest_event_partitions(con, landing, list(context.partition_keys)).items():
            context.log.info(
                f"raw.events {key}: read {result.read:,} = accepted {result.accepted:,} + rejected "
                f"{result.rejected:,} + duplicates {result.duplicates:,} ({result.duplicates_conflicting:,} "
                f"conflicting) ({result.files} files, {result.seconds:.1f} s)"
            )
            for quarantined in result.quarantined:
                context.log.warning(f"raw.events {key}: quarantined {quarantined.path} ({quarantined.reason}); "
                                    f"replace the file and ingest {key} again")
            results.append((key, result))
        total_rows = con.execute("select count(*) from raw.events").fetchall()[0][0]
        rejects = con.execute(
            "select reason, count(*) as rows from raw.rejected_events "
            "where arrival_date in (select unnest($keys::date[])) group by 1 order by 2 desc",
            {"keys": [parse_partition(key) for key, _ in results]},
        ).pl()
    per_partition = pl.DataFrame([
        {"partition": key, "files": r.files, "files_quarantined": len(r.quarantined), "read": r.read,
         "accepted": r.accepted, "rejected": r.rejected, "duplicates_exact": r.duplicates_exact,
         "duplicates_conflicting": r.duplicates_conflicting, "late_events": r.late_events,
         "seconds": round(r.seconds, 2)}
        for key, r in results
    ])
    quarantined = pl.DataFrame(
        [{"partition": key, "file": str(q.path), "format": q.fmt, "size_bytes": q.size_bytes, "reason": q.reason}
         for key, r in results for q in r.quarantined],
        schema={"partition": pl.String, "file": pl.String, "format": pl.String, "size_bytes": pl.Int64,
                "reason": pl.String})
    totals = {name: sum(getattr(r, name) for _, r in results)
              for name in ("read", "accepted", "rejected", "duplicates", "duplicates_exact", "duplicates_conflicting",
                           "late_events")}
    return dg.MaterializeResult(metadata={
        **totals, "partitions": len(results), "dagster/row_count": total_rows,
        "accounting_balances": totals["read"] == totals["accepted"] + totals["rejected"] + totals["duplicates"],
        "files_quarantined": quarantined.height,
        "quarantined_files": dg.MetadataValue.md(markdown_table(quarantined.head(40), max_chars=120)),
        "per_partition": dg.MetadataValue.md(markdown_table(per_partition.tail(40))),
        "rejects_by_reason": dg.MetadataValue.md(markdown_table(rejects)),
    })


@dg.asset_check(asset=raw_events, blocking=True)
def raw_events_suite(context: dg.AssetCheckExecutionContext, crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Gate: contract of stored rows, reject rate under max_reject_rate, at most max_quarantined_files unreadable
    files per partition, volume near the trailing median."""
    keys = context.partition_keys if context.has_partition_key_range or context.has_partition_key else []
    with warehouse.audit() as con:
        # partitions an earlier run ingested but whose gate failed are checked again: publishing this run's
        # partitions publishes theirs too
        earlier = ingest.unpublished_partitions(con, warehouse.store().published_version("raw.ingest_log"))
        partitions = tuple(sorted({parse_partition(key) for key in keys} | set(earlier)))
        report = check(con, "raw.events", crossfade.thresholds(partitions))
    return gate(report, warehouse, "raw.events", {"partitions_checked": len(partitions),
                                                  "unpublished_partitions_rechecked": len(set(earlier) - set(
                                                      parse_partition(key) for key in keys))})


@dg.asset_check(asset=raw_items, blocking=True)
def raw_items_suite(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Gate: one row per item_id, item types from configuration, sane durations."""
    with warehouse.audit() as con:
        report = check(con, "raw.items", crossfade.thresholds())
    return gate(report, warehouse, "raw.items")


@dg.asset_check(asset=raw_users, blocking=True)
def raw_users_suite(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Gate: one row per user_id."""
    with warehouse.audit() as con:
        report = check(con, "raw.users", crossfade.thresholds())
    return gate(report, warehouse, "raw.users")
