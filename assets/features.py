"""Feature stage: one SQL file per table, built for the run's as-of date, each gated by its suite."""

import dagster as dg

from assets.common import WRITES_TAG, check_result, preview
from pipelines.resources import Crossfade, Warehouse
from quality import check
from warehouse.features import build_table

DESCRIPTIONS = {
    "splits": "The global temporal split: train window before the cut, holdout up to the as-of date.",
    "interactions": "One row per (period, user, item): plays, ms played, completion, weak-signal flags, first and last seen.",
    "user_stats": "One row per user: plays by type in the train window; warm or cold for the target type.",
    "item_stats": "One row per catalogue item: listeners, plays, median completion, popularity tier 1-5.",
    "co_listen_edges": "Item pairs of the graph types with at least min_co_listeners common users, one relation per type pair.",
}
UPSTREAM = {
    "splits": [["raw", "events"]],
    "interactions": [["features", "splits"], ["raw", "events"], ["raw", "items"]],
    "user_stats": [["features", "interactions"], ["raw", "users"]],
    "item_stats": [["features", "interactions"], ["raw", "items"]],
    "co_listen_edges": [["features", "interactions"]],
}


def _feature_asset(name: str) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    table = f"features.{name}"

    @dg.asset(op_tags=WRITES_TAG, key=["features", name], deps=UPSTREAM[name], group_name="features", kinds={"duckdb"},
              description=DESCRIPTIONS[name])
    def build(context: dg.AssetExecutionContext, crossfade: Crossfade, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.write() as con:
            as_of = crossfade.as_of(context, con)
            built = build_table(con, name, crossfade.feature_params(as_of))
            extra = _extra_metadata(con, name)
            sample = preview(con, table)
        context.log.info(f"{table}: {built.rows:,} rows for as-of {as_of} in {built.seconds:.1f} s")
        return dg.MaterializeResult(metadata={
            "dagster/row_count": built.rows, "as_of": as_of.isoformat(), "seconds": round(built.seconds, 3),
            "preview": sample, **extra,
        })

    @dg.asset_check(asset=build, blocking=True, name=f"features_{name}_suite", description=f"Gate: the {table} suite.")
    def gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.read() as con:
            return check_result(check(con, table, crossfade.thresholds()))

    return build, gate


def _extra_metadata(con, name: str) -> dict:
    if name == "co_listen_edges":
        counts = con.execute(
            "select relation, count(*) as edges, sum(co_listeners) as co_listeners "
            "from features.co_listen_edges group by 1 order by 1"
        ).fetchall()
        return {"edges_by_relation": dg.MetadataValue.md(
            "| relation | edges | co-listeners |\n| --- | --- | --- |\n"
            + "\n".join(f"| {relation} | {edges:,} | {total:,} |" for relation, edges, total in counts)
        )}
    if name == "user_stats":
        warm, cold, active = con.execute(
            "select count(*) filter (where is_warm), count(*) filter (where not is_warm), count(*) filter (where is_active) "
            "from features.user_stats"
        ).fetchall()[0]
        return {"warm_users": warm, "cold_users": cold, "active_users": active}
    return {}


feature_assets = []
feature_checks = []
for _name in DESCRIPTIONS:
    _asset, _check = _feature_asset(_name)
    feature_assets.append(_asset)
    feature_checks.append(_check)


