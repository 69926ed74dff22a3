"""Suites for the feature tables: contracts, no leakage across the split, edge sanity, coverage; counted in SQL."""
from __future__ import annotations

import itertools

import duckdb

from quality.contracts import columns_report
from quality.facts import Rule, between, in_set, is_true, mean_between, not_null, row_count, unique, validate_facts
from quality.thresholds import Thresholds
from quality.validate import Report
from warehouse.features import PERIODS
from warehouse.store import scalar

VERSION = "features/v1"


def splits_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    return _with_contract(con, "features.splits", validate_facts(con, "features.splits", """
        select split, end_at > start_at as is_ordered,
               end_at = lead(start_at) over (order by start_at) or split = 'holdout' as is_contiguous
        from features.splits
        """, [
        row_count(len(PERIODS), len(PERIODS)),
        in_set("split", PERIODS),
        unique("split"),
        is_true("is_ordered"),
        is_true("is_contiguous"),
    ], VERSION))


def interactions_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    report = validate_facts(con, "features.interactions", """
        select i.period, i.user_id, i.item_id, i.item_type, i.completion_rate, i.count_events,
               i.first_seen_at >= s.start_at and i.last_seen_at < s.end_at as is_inside_period
        from features.interactions as i
        inner join features.splits as s on s.split = i.period
        """, [
        unique("period", "user_id", "item_id"),
        in_set("period", PERIODS),
        in_set("item_type", limits.item_types),
        between("completion_rate", 0, 1),
        between("count_events", low=1),
        # Leakage: a train row never holds a holdout event, nor a holdout row a later one.
        is_true("is_inside_period"),
        # Nothing can be trained without a train period (one day of data, a window before the first event):
        # the fact's name is what the run prints, so it says what is missing.
        Rule("expect_column_values_to_be_between", "count_train_period_interactions",
             "count(*) filter (where period = 'train')", low=1, high=None),
    ], VERSION)
    return _with_contract(con, "features.interactions", report)


def user_stats_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    users = scalar(con, "select count(*) from raw.users")
    return _with_contract(con, "features.user_stats", validate_facts(con, "features.user_stats", """
        select user_id, count_events, is_active from features.user_stats
        """, [
        unique("user_id"),
        not_null("user_id"),
        between("count_events", low=0),
        row_count(users, users),
        mean_between("is_active", low=0.01),  # coverage: someone listened
    ], VERSION))


def item_stats_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    return _with_contract(con, "features.item_stats", validate_facts(con, "features.item_stats", """
        select item_id, popularity_tier, count_listeners, median_completion, count_listeners > 0 as has_listeners
        from features.item_stats
        """, [
        unique("item_id"),
        between("popularity_tier", 1, 5),
        between("count_listeners", low=0),
        between("median_completion", 0, 1),
        mean_between("has_listeners", low=limits.min_catalog_coverage),
    ], VERSION))


def co_listen_edges_suite(con: duckdb.DuckDBPyConnection, limits: Thresholds) -> Report:
    relations = ["__".join(sorted(pair)) for pair in itertools.combinations_with_replacement(sorted(limits.graph_types), 2)]
    return _with_contract(con, "features.co_listen_edges", validate_facts(con, "features.co_listen_edges", """
        select e.src_item_id, e.dst_item_id, e.relation, e.co_listeners,
               e.src_item_id < e.dst_item_id as is_ordered_pair,
               s.item_type = e.src_type and d.item_type = e.dst_type as types_match_catalog
        from features.co_listen_edges as e
        left join raw.items as s on s.item_id = e.src_item_id
        left join raw.items as d on d.item_id = e.dst_item_id
        """, [
        row_count(low=1),
        unique("src_item_id", "dst_item_id"),
        is_true("is_ordered_pair"),  # no self loops, once per pair
        is_true("types_match_catalog"),
        in_set("relation", relations),
        between("co_listeners", low=limits.min_co_listeners),
    ], VERSION))


def _with_contract(con: duckdb.DuckDBPyConnection, table: str, report: Report) -> Report:
    report.merge(columns_report(con, table, VERSION))
    return report


SUITES = {
    "features.splits": splits_suite,
    "features.interactions": interactions_suite,
    "features.user_stats": user_stats_suite,
    "features.item_stats": item_stats_suite,
    "features.co_listen_edges": co_listen_edges_suite,
}
