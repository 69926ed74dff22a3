"""Expectation suites: every suite passes on the sample world and catches a planted fault with its count."""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from quality import SUITES, Report, Thresholds, check

ITEM_TYPES = ("music", "podcast", "audiobook")


def limits_for(con: duckdb.DuckDBPyConnection, **changes) -> Thresholds:
    partitions = tuple(row[0] for row in con.execute("select distinct arrival_date from raw.ingest_log order by 1").fetchall())
    return dataclasses.replace(Thresholds(partitions=partitions), **changes)


def failures(report: Report) -> dict[str, int | None]:
    """Failed expectations keyed 'type:column' with their unexpected counts."""
    return {f"{failure['expectation']}:{failure['column']}": failure.get("unexpected_count") for failure in report.failed}


@pytest.fixture
def scratch(ingested_world, tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A write connection to a copy of the sample world's warehouse, to plant faults in."""
    with ingested_world.copy_to(tmp_path / "home").write() as con:
        yield con


@pytest.mark.parametrize("table", sorted(name for name in SUITES if name.startswith(("raw.", "features."))))
def test_every_suite_passes_on_the_sample_world(ingested_world, table: str) -> None:
    with ingested_world.store.read() as con:
        report = check(con, table, limits_for(con))
    assert report.failed == []
    assert report.success and report.checked >= 3 and report.rows > 0
    assert report.markdown().startswith(f"all {report.checked} expectations passed")


def test_unknown_table_is_refused_with_the_known_ones(scratch) -> None:
    with pytest.raises(KeyError, match="raw.items"):
        check(scratch, "raw.item", Thresholds())


def test_events_suite_needs_partitions(scratch) -> None:
    with pytest.raises(ValueError, match="partitions"):
        check(scratch, "raw.events", Thresholds())


def test_reject_rate_over_the_limit_fails_with_the_rate(scratch) -> None:
    partition = dt.date(2026, 10, 20)
    scratch.execute(  # 100 more bad rows read and quarantined, as an ingest would record them
        "insert into raw.rejected_events select arrival_date, source_file, 0, 'missing_field', null, '{}' "
        "from raw.events where arrival_date = $d limit 100", {"d": partition})
    scratch.execute(
        "update raw.ingest_log set count_rejected = count_rejected + 100, count_read = count_read + 100 where arrival_date = $d",
        {"d": partition},
    )
    report = check(scratch, "raw.events", limits_for(scratch, partitions=(partition,)))
    assert failures(report) == {"expect_column_values_to_be_between:reject_rate": 1}


def test_unbalanced_accounting_fails(scratch) -> None:
    scratch.execute("update raw.ingest_log set count_read = count_read + 1 where arrival_date = '2026-10-21'")
    report = check(scratch, "raw.events", limits_for(scratch))
    assert failures(report) == {"expect_column_values_to_be_in_set:accounting_balances": 1}


def test_volume_far_from_the_trailing_median_fails(scratch) -> None:
    # three times the accepted rows, stored and logged, so only volume is off
    scratch.execute("""
        insert into raw.events
        select event_id || '-copy' || copy, user_id, item_id, ts, event_date, event_type, ms_played, context, country,
               arrival_date, source_file, source_line
        from raw.events, range(1, 3) as copies(copy) where arrival_date = '2026-10-25'
    """)
    scratch.execute(
        "update raw.ingest_log set count_read = count_read + 2 * count_accepted, count_accepted = 3 * count_accepted "
        "where arrival_date = '2026-10-25'"
    )
    report = check(scratch, "raw.events", limits_for(scratch))
    assert failures(report) == {"expect_column_values_to_be_between:volume_vs_median": 1}


def test_a_partition_missing_from_the_ingest_log_fails(scratch) -> None:
    report = check(scratch, "raw.events", limits_for(scratch, partitions=(dt.date(2030, 1, 1),)))
    assert [failure["expectation"] for failure in report.failed] == ["every checked partition is in raw.ingest_log"]


def test_stored_events_breaking_the_contract_fail(scratch) -> None:
    scratch.execute("""
        update raw.events set ms_played = -1
        where event_id in (select event_id from raw.events where arrival_date = '2026-10-22' order by event_id limit 2)
    """)
    scratch.execute("""
        update raw.events set arrival_date = event_date - 1
        where event_id = (select min(event_id) from raw.events where arrival_date = '2026-10-23')
    """)
    report = check(scratch, "raw.events", limits_for(scratch))
    assert failures(report) == {
        "expect_column_values_to_be_between:ms_played": 2,
        "expect_column_values_to_be_in_set:is_not_after_arrival": 1,
        # the moved row left 2026-10-23 for the day before: both logs now disagree with what is stored
        "expect_column_values_to_be_in_set:accepted_are_stored": 2,
    }
    ms_played = next(failure for failure in report.failed if failure["column"] == "ms_played")
    assert ms_played["examples"] == ["-1"] and ms_played["element_count"] == report.rows


@pytest.mark.parametrize(("change", "failed"), [
    # accepted moved to duplicates: the balance holds, but raw.events holds more rows than the log says
    ("count_accepted = count_accepted - 5, count_duplicates = count_duplicates + 5", "accepted_are_stored"),
    ("count_duplicates_conflicting = count_duplicates + 1", "conflicting_within_duplicates"),
])
def test_a_log_that_disagrees_with_the_tables_fails(scratch, change: str, failed: str) -> None:
    scratch.execute(f"update raw.ingest_log set {change} where arrival_date = '2026-10-21'")
    assert failures(check(scratch, "raw.events", limits_for(scratch))) == {f"expect_column_values_to_be_in_set:{failed}": 1}


def test_negative_duplicates_fail_even_when_the_balance_holds(scratch) -> None:
    scratch.execute("""
        insert into raw.rejected_events select arrival_date, source_file, 0, 'missing_field', null, '{}'
        from raw.events where arrival_date = '2026-10-21' limit 3
    """)
    scratch.execute("update raw.ingest_log set count_rejected = count_rejected + 3, count_duplicates = count_duplicates - 3 "
                    "where arrival_date = '2026-10-21'")
    scratch.execute("update raw.ingest_log set count_duplicates_conflicting = 0 where arrival_date = '2026-10-21'")
    duplicates = scratch.execute("select count_duplicates from raw.ingest_log where arrival_date = '2026-10-21'").fetchall()
    assert duplicates[0][0] < 0
    assert failures(check(scratch, "raw.events", limits_for(scratch))) == {
        "expect_column_values_to_be_between:count_duplicates": 1,
        "expect_column_values_to_be_in_set:conflicting_within_duplicates": 1,  # 0 conflicting > -3 duplicates
    }


def test_a_table_off_its_contract_fails_with_the_columns(scratch) -> None:
    scratch.execute("create or replace table raw.users as select * exclude (signup_date) rename (country as country_code), "
                    "signup_date::varchar as signup_date from raw.users")
    report = check(scratch, "raw.users", Thresholds())
    found = {failure["expectation"]: failure for failure in report.failed}
    assert set(found) == {"expect_column_values_to_be_in_set", "expect_column_distinct_values_to_contain_set"}
    assert sorted(found["expect_column_values_to_be_in_set"]["examples"]) == ["country_code VARCHAR", "signup_date VARCHAR"]
    assert found["expect_column_values_to_be_in_set"]["unexpected_count"] == 2


def test_a_feature_table_missing_a_column_fails(scratch) -> None:
    scratch.execute("alter table features.item_stats drop column is_released")
    assert "expect_column_distinct_values_to_contain_set:column_type" in failures(
        check(scratch, "features.item_stats", Thresholds()))


def test_items_mostly_without_titles_fail_with_the_share(scratch) -> None:
    scratch.execute("update raw.items set title = null where item_type = 'music'")
    report = check(scratch, "raw.items", Thresholds())
    assert failures(report) == {"expect_column_values_to_not_be_null:title": None}
    music = scratch.execute("select avg((item_type = 'music')::int) from raw.items").fetchall()[0][0]
    assert report.failed[0]["observed_value"] == pytest.approx(music)


def test_duplicate_items_fail_with_their_count(scratch) -> None:
    scratch.execute("insert into raw.items select * from raw.items where item_type = 'audiobook' order by item_id limit 3")
    report = check(scratch, "raw.items", Thresholds())
    assert failures(report) == {"expect_column_values_to_be_unique:item_id": 6}


def test_item_types_outside_configuration_fail(scratch) -> None:
    music = scratch.execute("select count(*) from raw.items where item_type = 'music'").fetchall()[0][0]
    report = check(scratch, "raw.items", Thresholds(item_types=("podcast", "audiobook")))
    assert failures(report) == {"expect_column_values_to_be_in_set:item_type": music}


def test_duplicate_users_fail(scratch) -> None:
    scratch.execute("insert into raw.users select * from raw.users order by user_id limit 1")
    assert failures(check(scratch, "raw.users", Thresholds())) == {"expect_column_values_to_be_unique:user_id": 2}


def test_a_fourth_split_fails(scratch) -> None:
    scratch.execute(
        "insert into features.splits select 'later', end_at, end_at + interval 1 day from features.splits where split = 'holdout'"
    )
    found = failures(check(scratch, "features.splits", Thresholds()))
    assert found == {
        "expect_table_row_count_to_equal:None": None, "expect_column_values_to_be_in_set:split": 1,
        "expect_column_values_to_be_in_set:is_contiguous": 1,  # the last split is no longer the holdout
    }


def test_leakage_into_train_rows_fails(scratch) -> None:
    scratch.execute("""
        update features.interactions set last_seen_at = (select end_at from features.splits where split = 'train')
        where (user_id, item_id) = (
            select (user_id, item_id) from features.interactions where period = 'train' order by user_id, item_id limit 1
        )
          and period = 'train'
    """)
    assert failures(check(scratch, "features.interactions", Thresholds())) == {
        "expect_column_values_to_be_in_set:is_inside_period": 1,
    }


def test_completion_outside_zero_to_one_fails(scratch) -> None:
    scratch.execute(
        "update features.interactions set completion_rate = 1.5 where item_id = (select min(item_id) from features.interactions)"
    )
    count = scratch.execute("select count(*) from features.interactions where completion_rate > 1").fetchall()[0][0]
    assert failures(check(scratch, "features.interactions", Thresholds())) == {
        "expect_column_values_to_be_between:completion_rate": count,
    }


def test_a_user_missing_from_user_stats_fails(scratch) -> None:
    scratch.execute("delete from features.user_stats where user_id = (select min(user_id) from features.user_stats)")
    assert list(failures(check(scratch, "features.user_stats", Thresholds()))) == ["expect_table_row_count_to_equal:None"]


def test_a_tier_out_of_range_fails(scratch) -> None:
    scratch.execute("update features.item_stats set popularity_tier = 6 where item_id = (select min(item_id) from features.item_stats)")
    assert failures(check(scratch, "features.item_stats", Thresholds())) == {
        "expect_column_values_to_be_between:popularity_tier": 1,
    }


def test_edges_stored_twice_or_reversed_fail(scratch) -> None:
    scratch.execute("""
        insert into features.co_listen_edges
        select dst_item_id, src_item_id, dst_type, src_type, relation, co_listeners
        from features.co_listen_edges order by src_item_id, dst_item_id limit 4
    """)
    assert failures(check(scratch, "features.co_listen_edges", Thresholds())) == {
        "expect_column_values_to_be_in_set:is_ordered_pair": 4,
    }


def test_edges_below_min_co_listeners_fail(scratch) -> None:
    weak = scratch.execute("select count(*) from features.co_listen_edges where co_listeners < 2").fetchall()[0][0]
    assert weak > 0
    assert failures(check(scratch, "features.co_listen_edges", Thresholds(min_co_listeners=2))) == {
        "expect_column_values_to_be_between:co_listeners": weak,
    }


def test_no_edges_at_all_fails(scratch) -> None:
    scratch.execute("delete from features.co_listen_edges")
    assert "expect_table_row_count_to_be_between:None" in failures(check(scratch, "features.co_listen_edges", Thresholds()))


def test_report_markdown_shows_each_failure_with_its_count(scratch) -> None:
    scratch.execute("insert into raw.users select * from raw.users order by user_id limit 1")
    report = check(scratch, "raw.users", Thresholds())
    assert not report.success
    assert "| expect_column_values_to_be_unique | user_id | 2 |" in report.markdown()
