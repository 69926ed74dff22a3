"""models.registry: register, promote (the old one retires), reject, and at most one promoted row."""
import datetime as dt

import duckdb
import pytest

from warehouse import registry


def row(version: str, cold_hr10: float = 0.2) -> dict:
    return {"model_version": version, "model_name": "two_tower_hgnn", "as_of": dt.date(2026, 11, 23),
            "train_start": dt.datetime(2026, 8, 11), "train_end": dt.datetime(2026, 11, 9),
            "config": {"epochs": 10}, "metrics": {"cold": {"hr@10": cold_hr10}}, "checkpoint_dir": f"/models/{version}"}


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    registry.ensure(connection)
    return connection


def statuses(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(con.execute("select model_version, status from models.registry").fetchall())


def test_nothing_is_promoted_in_an_empty_or_missing_registry() -> None:
    assert registry.promoted(duckdb.connect()) is None
    assert registry.latest(duckdb.connect()) is None


def test_a_registered_version_is_a_candidate_with_its_metrics(con) -> None:
    registry.register(con, row("v1", 0.25))
    stored = registry.get(con, "v1")
    assert stored["status"] == "candidate"
    assert stored["metrics"] == {"cold": {"hr@10": 0.25}}
    assert stored["config"] == {"epochs": 10}
    assert stored["promoted_at"] is None


def test_promotion_retires_the_previous_model(con) -> None:
    registry.register(con, row("v1"))
    registry.promote(con, "v1")
    registry.register(con, row("v2"))
    registry.promote(con, "v2")
    assert statuses(con) == {"v1": "retired", "v2": "promoted"}
    assert registry.promoted(con)["model_version"] == "v2"
    assert registry.get(con, "v1")["reason"] == "replaced by v2"


def test_rejection_keeps_the_reason_and_the_promoted_model(con) -> None:
    registry.register(con, row("v1"))
    registry.promote(con, "v1")
    registry.register(con, row("v2"))
    registry.reject(con, "v2", "cold hr@10 below popularity")
    assert statuses(con) == {"v1": "promoted", "v2": "rejected"}
    assert registry.get(con, "v2")["reason"] == "cold hr@10 below popularity"
    assert registry.candidates(con) == []


def test_only_candidates_can_be_promoted_or_rejected(con) -> None:
    registry.register(con, row("v1"))
    registry.reject(con, "v1", "worse")
    with pytest.raises(ValueError, match="'rejected'"):
        registry.promote(con, "v1")
    with pytest.raises(ValueError, match="unregistered"):
        registry.reject(con, "nope", "worse")


def test_versions_are_never_reused(con) -> None:
    registry.register(con, row("v1"))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(con, row("v1"))


def test_rows_missing_required_columns_are_refused(con) -> None:
    incomplete = row("v1")
    del incomplete["metrics"]
    with pytest.raises(ValueError, match=r"lacks \['metrics'\]"):
        registry.register(con, incomplete)


def test_latest_is_the_newest_row_whatever_its_status(con) -> None:
    registry.register(con, row("v1") | {"created_at": dt.datetime(2026, 11, 1)})
    registry.register(con, row("v2") | {"created_at": dt.datetime(2026, 11, 2)})
    registry.reject(con, "v2", "worse")
    assert registry.latest(con)["model_version"] == "v2"


def test_latest_tuned_is_the_newest_row_that_records_when_its_settings_were_validated(con) -> None:
    assert registry.latest_tuned(con) is None and registry.latest_tuned(duckdb.connect()) is None
    tuned = {"cold": {"hr@10": 0.2}, "tuned": {}, "tuned_at": "2026-11-01"}
    registry.register(con, row("v1") | {"created_at": dt.datetime(2026, 11, 1), "metrics": tuned})
    later = tuned | {"tuned_at": "2026-11-02"}
    registry.register(con, row("v2") | {"created_at": dt.datetime(2026, 11, 2), "metrics": later})
    registry.reject(con, "v2", "worse")
    registry.register(con, row("v3") | {"created_at": dt.datetime(2026, 11, 3)})  # no tuned_at: written by hand
    assert registry.latest_tuned(con)["model_version"] == "v2"  # a rejected row's settings were still validated
