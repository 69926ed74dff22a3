"""Feature stage: one SQL file per table (warehouse/sql/features/<name>.sql), built for the run's as-of date, each gated."""

import dagster as dg
import duckdb

from assets.common import WAREHOUSE_POOL, gate, markdown_table, preview
from assets.resources import Crossfade, Warehouse
from quality import check
from warehouse.features import build_table, days_with_events, left_out, thin_train_warning


def _build(context: dg.AssetExecutionContext, crossfade: Crossfade, warehouse: Warehouse,
           name: str) -> dg.MaterializeResult:
    """Run features/<name>.sql for the run's as-of date; row count, timing, preview and per-table facts."""
    table = f"features.{name}"
    with warehouse.write(table) as con:
        as_of = crossfade.as_of(context, con)
        built = build_table(con, name, crossfade.feature_params(as_of))
        facts = _FACTS.get(name, lambda _: {})(con)
        sample = preview(con, table)
    context.log.info(f"{table}: {built.rows:,} rows for as-of {as_of} in {built.seconds:.1f} s")
    left = {key: value for key, value in facts.items() if key.startswith("count_") and "not_in" in key and value}
    if left:
        context.log.warning(f"{table}: left out {left}; add them to landing/items or landing/users to keep them")
    thin = thin_train_warning(facts) if "days_with_events_train" in facts else None
    if thin:
        context.log.warning(f"{table}: {thin}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": built.rows, "as_of": as_of.isoformat(), "seconds": round(built.seconds, 3),
        "preview": sample, **facts,
    })


def _gate(crossfade: Crossfade, warehouse: Warehouse, table: str) -> dg.AssetCheckResult:
    with warehouse.audit() as con:
        report = check(con, table, crossfade.thresholds())
    return gate(report, warehouse, table)


def _edge_counts(con: duckdb.DuckDBPyConnection) -> dict:
    counts = con.execute("select relation, count(*) as edges, sum(co_listeners) as co_listeners "
                         "from features.co_listen_edges group by 1 order by 1").pl()
    return {"edges_by_relation": dg.MetadataValue.md(markdown_table(counts))}


def _user_counts(con: duckdb.DuckDBPyConnection) -> dict:
    warm, cold, active = con.execute(
        "select count(*) filter (where is_warm), count(*) filter (where not is_warm), count(*) filter (where is_active) "
        "from features.user_stats").fetchall()[0]
    return {"warm_users": warm, "cold_users": cold, "active_users": active}


# Rows that leave the chain are counted where they leave: events of items dropped from the catalogue at
# features.interactions (it joins raw.items), users missing from raw.users at features.user_stats.
_FACTS = {"co_listen_edges": _edge_counts, "user_stats": lambda con: _user_counts(con) | left_out(con),
          "interactions": lambda con: left_out(con) | days_with_events(con)}
_ASSET = {"pool": WAREHOUSE_POOL, "group_name": "features", "kinds": {"duckdb"}}


@dg.asset(key=["features", "splits"], deps=[["raw", "events"]], **_ASSET)
def features_splits(context: dg.AssetExecutionContext, crossfade: Crossfade, warehouse: Warehouse) -> dg.MaterializeResult:
    """The global temporal split: train window before the cut, holdout up to the as-of date."""
    return _build(context, crossfade, warehouse, "splits")


@dg.asset(key=["features", "interactions"], deps=[features_splits, ["raw", "events"], ["raw", "items"]], **_ASSET)
def features_interactions(context: dg.AssetExecutionContext, crossfade: Crossfade,
                          warehouse: Warehouse) -> dg.MaterializeResult:
    """One row per (period, user, item): plays, ms played, completion, weak-signal flags, first and last seen."""
    return _build(context, crossfade, warehouse, "interactions")


@dg.asset(key=["features", "user_stats"], deps=[features_interactions, ["raw", "users"]], **_ASSET)
def features_user_stats(context: dg.AssetExecutionContext, crossfade: Crossfade,
                        warehouse: Warehouse) -> dg.MaterializeResult:
    """One row per user: plays by type in the train window; warm or cold for the target type."""
    return _build(context, crossfade, warehouse, "user_stats")


@dg.asset(key=["features", "item_stats"], deps=[features_interactions, ["raw", "items"]], **_ASSET)
def features_item_stats(context: dg.AssetExecutionContext, crossfade: Crossfade,
                        warehouse: Warehouse) -> dg.MaterializeResult:
    """One row per catalogue item: listeners, plays, median completion, popularity tier 1-5."""
    return _build(context, crossfade, warehouse, "item_stats")


@dg.asset(key=["features", "co_listen_edges"], deps=[features_interactions], **_ASSET)
def features_co_listen_edges(context: dg.AssetExecutionContext, crossfade: Crossfade,
                             warehouse: Warehouse) -> dg.MaterializeResult:
    """Item pairs of the graph types with at least min_co_listeners common users, one relation per type pair."""
    return _build(context, crossfade, warehouse, "co_listen_edges")


@dg.asset_check(asset=features_splits, blocking=True, name="features_splits_suite")
def features_splits_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Gate: the features.splits suite."""
    return _gate(crossfade, warehouse, "features.splits")


@dg.asset_check(asset=features_interactions, blocking=True, name="features_interactions_suite")
def features_interactions_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Gate: the features.interactions suite."""
    return _gate(crossfade, warehouse, "features.interactions")


@dg.asset_check(asset=features_user_stats, blocking=True, name="features_user_stats_suite")
def features_user_stats_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Gate: the features.user_stats suite."""
    return _gate(crossfade, warehouse, "features.user_stats")


@dg.asset_check(asset=features_item_stats, blocking=True, name="features_item_stats_suite")
def features_item_stats_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Gate: the features.item_stats suite."""
    return _gate(crossfade, warehouse, "features.item_stats")


@dg.asset_check(asset=features_co_listen_edges, blocking=True, name="features_co_listen_edges_suite")
def features_co_listen_edges_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    """Gate: the features.co_listen_edges suite."""
    return _gate(crossfade, warehouse, "features.co_listen_edges")
