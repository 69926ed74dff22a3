"""enrich.llm_quality's contract and the agreement of the used columns with it, on hand-built tables: each check
passes on consistent rows and fails, with its count, on one planted fault."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import duckdb
import polars as pl
import pytest

from models import llm_quality
from quality import Report, Thresholds, enrich_suites
from warehouse import enrichment_tables

MODEL, ITEM_VERSION, USER_VERSION = "m", "item_topics.v1", "user_profile.v2"
NOW = dt.datetime(2026, 11, 2, 3, 0)


def failures(report: Report) -> dict[str, int | None]:
    return {f"{failure['expectation']}:{failure['column']}": failure.get("unexpected_count")
            for failure in report.failed}


def measured(kind: str, version: str, values: dict[str, float], answers: int = 12) -> pl.DataFrame:
    floors = {"topic_accuracy": 0.6, "profile_faithfulness": 0.6, "json_validity": 0.9}
    measures = [llm_quality.Measure(kind, metric, value, answers, floors[metric], llm_quality.MIN_ANSWERS, "hand-made")
                for metric, value in values.items()]
    return llm_quality.quality_rows(measures, MODEL, version, NOW)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """enrich.llm_quality with item topics used (both metrics pass) and profiles not (faithfulness below its floor),
    enrich.item_topics and enrich.user_profiles that follow it."""
    con = duckdb.connect()
    con.execute("create schema enrich")
    enrichment_tables.write_llm_quality(con, measured("item_topics", ITEM_VERSION, {"topic_accuracy": 0.75,
                                                                                    "json_validity": 1.0}))
    enrichment_tables.write_llm_quality(con, measured("user_profiles", USER_VERSION, {"profile_faithfulness": 0.3,
                                                                                      "json_validity": 0.95}))
    con.execute(
        """
        create table enrich.item_topics as select * from (values
            ('i1', 'ok', ['jazz'], 'llm', ['jazz'], ['jazz'], 'taxonomy'),
            ('i2', 'ok', ['comedy'], 'llm', ['comedy'], ['history'], 'taxonomy'),
            ('i3', 'pending', ['science'], 'zero_shot', null, ['science'], 'zero_shot')
        ) as t(item_id, status, topics, topics_source, llm_topics, floor_topics, floor_source)
        """
    )
    con.execute("alter table enrich.item_topics add column model varchar default 'm'")
    con.execute("alter table enrich.item_topics add column prompt_version varchar default 'item_topics.v1'")
    con.execute(
        """
        create table enrich.user_profiles as select * from (values
            ('u1', 'ok', 'template', '{"t": 1}', '{"t": 1}', '{"n": 1}'),
            ('u2', 'pending', 'template', '{"t": 2}', '{"t": 2}', null),
            ('u3', 'no_activity', null, null, null, null)
        ) as t(user_id, status, profile_source, profile_json, template_json, narrative_json)
        """
    )
    con.execute("alter table enrich.user_profiles add column model varchar default 'm'")
    con.execute("alter table enrich.user_profiles add column prompt_version varchar default 'user_profile.v2'")
    yield con
    con.close()


def test_consistent_tables_pass_every_check(con: duckdb.DuckDBPyConnection) -> None:
    assert enrich_suites.llm_quality_suite(con, Thresholds()).success
    assert enrich_suites.item_topics_decision(con).success
    assert enrich_suites.user_profiles_decision(con).success


def test_a_share_outside_zero_and_one_fails(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("update enrich.llm_quality set value = 1.5 where metric = 'json_validity' and kind = 'item_topics'")
    assert failures(enrich_suites.llm_quality_suite(con, Thresholds(), ("item_topics",))) == {
        "expect_column_values_to_be_between:value": 1}


def test_a_pass_on_too_few_answers_fails(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("update enrich.llm_quality set count_answers = 4 where metric = 'topic_accuracy'")
    assert failures(enrich_suites.llm_quality_suite(con, Thresholds())) == {
        "expect_column_values_to_be_in_set:is_verdict_right": 1}


def test_a_kind_used_with_a_failed_metric_fails(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("update enrich.llm_quality set is_used = true where kind = 'user_profiles'")
    assert failures(enrich_suites.llm_quality_suite(con, Thresholds(), ("user_profiles",))) == {
        "expect_column_values_to_be_in_set:is_decision_right": 2}  # both rows of the kind carry the decision


def test_a_kind_not_measured_fails(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("delete from enrich.llm_quality where kind = 'user_profiles' and metric = 'json_validity'")
    assert failures(enrich_suites.llm_quality_suite(con, Thresholds())) == {
        "expect_column_values_to_be_in_set:is_measured": 1}
    con.execute("drop table enrich.llm_quality")
    report = enrich_suites.llm_quality_suite(con, Thresholds())
    assert [failure["unexpected_count"] for failure in report.failed] == [4]
    assert "enrich.llm_quality exists" in report.failed[0]["expectation"]


def test_llm_topics_used_where_their_kind_failed_fail(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("update enrich.llm_quality set value = 0.5, passed = false, is_used = false "
                "where kind = 'item_topics' and metric = 'topic_accuracy'")
    con.execute("update enrich.llm_quality set is_used = false where kind = 'item_topics'")
    assert enrich_suites.llm_quality_suite(con, Thresholds()).success  # the table is consistent: not used
    assert failures(enrich_suites.item_topics_decision(con)) == {  # but i1 and i2 still read the LLM's topics
        "expect_column_values_to_be_in_set:agrees_with_decision": 2}


def test_floor_topics_kept_where_the_llm_passed_fail(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("update enrich.item_topics set topics = floor_topics, topics_source = floor_source "
                "where item_id = 'i2'")
    assert failures(enrich_suites.item_topics_decision(con)) == {
        "expect_column_values_to_be_in_set:agrees_with_decision": 1}


def test_a_narrative_used_where_profiles_failed_fails(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("update enrich.user_profiles set profile_source = 'llm', profile_json = narrative_json "
                "where user_id = 'u1'")
    assert failures(enrich_suites.user_profiles_decision(con)) == {
        "expect_column_values_to_be_in_set:agrees_with_decision": 1}
    con.execute("update enrich.llm_quality set value = 0.9, passed = true, is_used = true where kind = 'user_profiles'")
    assert enrich_suites.user_profiles_decision(con).success  # once the kind passes, the narrative may be read


def test_each_kind_replaces_only_its_own_rows(con: duckdb.DuckDBPyConnection) -> None:
    enrichment_tables.write_llm_quality(con, measured("item_topics", ITEM_VERSION, {"topic_accuracy": 0.2,
                                                                                    "json_validity": 1.0}))
    assert con.execute("select kind, metric, value, is_used from enrich.llm_quality order by all").fetchall() == [
        ("item_topics", "json_validity", 1.0, False), ("item_topics", "topic_accuracy", 0.2, False),
        ("user_profiles", "json_validity", 0.95, False), ("user_profiles", "profile_faithfulness", 0.3, False)]
    with pytest.raises(ValueError, match="measure every metric"):
        enrichment_tables.write_llm_quality(con, pl.DataFrame(schema=llm_quality.SCHEMA))
