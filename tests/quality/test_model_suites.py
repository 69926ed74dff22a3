"""The promotion gate's slice choice and the offline-metrics gate on worlds with empty slices."""
from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest

from quality import model_suites
from quality.thresholds import Thresholds
from warehouse import registry


def metrics(cold_users: int, all_users: int, ours: float = 0.5, popularity: float = 0.3,
            best: tuple[str, float] | None = None) -> dict:
    """Registered metrics in slice_metrics' shape (an empty slice is {'users': 0}): the plan's validation
    figures, Popularity's, and the best baseline's per slice (default: Popularity)."""
    def block(value: float) -> dict:
        return {"all": {"hr@10": value, "users": all_users} if all_users else {"users": 0},
                "cold": {"hr@10": value, "users": cold_users} if cold_users else {"users": 0}}
    name, value = best or ("popularity", popularity)
    return block(ours) | {"reference": {"popularity": block(popularity),
                                        "best_baseline": {s: {"model": name, "hr@10": value} for s in ("all", "cold")}},
                          "training": {"losses_finite": True}}


def row(version: str, values: dict) -> dict:
    return {"model_version": version, "metrics": values}


def test_the_cold_slice_is_compared_when_it_has_enough_users() -> None:
    basis = model_suites.gate_basis(metrics(cold_users=model_suites.MIN_GATE_USERS, all_users=40))
    assert (basis["slice"], basis["users"]) == ("cold", model_suites.MIN_GATE_USERS)


def test_too_few_cold_users_fall_back_to_all_users_and_say_so() -> None:
    facts = model_suites.gate_facts(row("new", metrics(cold_users=3, all_users=40)), None)
    assert (facts["gate_slice"], facts["gate_users"]) == ("all", 40)
    assert facts["gate_basis"] == (f"cold slice has 3 users with a validation target (fewer than "
                                   f"{model_suites.MIN_GATE_USERS}): compared on all users (40) instead")
    assert facts["margin_over_popularity"] == pytest.approx(0.2)
    assert facts["margin_over_best_baseline"] == pytest.approx(0.2)


def test_no_cold_user_at_all_falls_back_too() -> None:
    facts = model_suites.gate_facts(row("new", metrics(cold_users=0, all_users=12, ours=0.2, popularity=0.4)), None)
    assert facts["gate_slice"] == "all"
    reason = model_suites.gate_reason(_report(False), facts, 0.1)
    assert reason.startswith("served all hr@10 0.2000 is below the best baseline popularity's 0.4000")
    assert "cold slice has 0 users" in reason


def test_the_gate_compares_with_the_best_baseline_not_only_popularity() -> None:
    behind = metrics(cold_users=20, all_users=40, ours=0.5, popularity=0.3, best=("item_knn", 0.6))
    report, facts = _gate(behind)
    assert facts["margin_over_popularity"] == pytest.approx(0.2)
    assert facts["best_baseline"] == "item_knn" and facts["margin_over_best_baseline"] == pytest.approx(-0.1)
    assert not report.success
    assert model_suites.gate_reason(report, facts, 0.1).startswith(
        "served cold hr@10 0.5000 is below the best baseline item_knn's 0.6000")
    tied = metrics(cold_users=20, all_users=40, ours=0.6, best=("ease", 0.6))
    assert _gate(tied)[0].success  # the plan serving the best baseline itself passes


def _gate(values: dict):
    """(report, facts) of the promotion gate on a registry holding one candidate with these metrics."""
    con = duckdb.connect()
    con.execute("create schema models")
    registry.register(con, {"model_version": "new", "model_name": "two_tower_hgnn", "as_of": dt.date(2026, 11, 2),
                            "config": {}, "checkpoint_dir": "",
                            "metrics": values | {"training": {"losses_finite": True}}})
    return model_suites.promotion_gate(con, "new", 0.1)


def test_no_validation_target_at_all_is_a_verdict_in_words() -> None:
    facts = model_suites.gate_facts(row("new", metrics(cold_users=0, all_users=0)), None)
    assert facts["gate_slice"] == "none" and facts["margin_over_popularity"] != facts["margin_over_popularity"]
    assert "no user has a target-type event in the validation period" in model_suites.gate_reason(
        _report(False), facts, 0.1)


def test_the_incumbent_is_compared_on_the_candidate_s_slice_and_old_rows_still_count() -> None:
    incumbent = row("old", {"cold": {"hr@10": 0.9}, "all": {"hr@10": 0.6}})  # registered before 'users' existed
    facts = model_suites.gate_facts(row("new", metrics(cold_users=2, all_users=40)), incumbent)
    assert facts["promoted_hr@10"] == 0.6 and facts["change_vs_promoted"] == pytest.approx(0.5 / 0.6 - 1)
    assert model_suites.gate_basis(incumbent["metrics"])["slice"] == "cold"  # unknown users: trusted as before


def _report(success: bool):
    class Report:
        def markdown(self) -> str:
            return "table"
    report = Report()
    report.success = success
    return report


def offline_rows(cold_users: int) -> pl.DataFrame:
    rows = []
    for model in ("popularity", "two_tower_hgnn"):
        for name, users in (("all", 10), ("warm", 10), ("cold", cold_users), ("long_tail", 4)):
            value = 0.5 if users else None
            rows.append({"split": "holdout", "model": model, "slice": name, "metric": "hr@10", "value": value,
                         "std_error": None,
                         "users": users, "as_of": "2026-11-02", "model_version": "v1"})
    return pl.DataFrame(rows)


@pytest.mark.parametrize(("cold_users", "cold_value", "passes"), [(0, None, True), (5, 0.3, True), (5, None, False)])
def test_the_offline_gate_accepts_a_reported_empty_slice_but_not_an_unscored_one(cold_users, cold_value, passes) -> None:
    frame = offline_rows(cold_users).with_columns(
        value=pl.when(pl.col("slice") == "cold").then(pl.lit(cold_value, pl.Float64)).otherwise(pl.col("value")))
    con = duckdb.connect()
    con.execute("create schema eval")
    con.register("frame", frame.to_arrow())
    con.execute("create table eval.offline_metrics as select * replace (as_of::date as as_of) from frame")
    assert model_suites.offline_metrics_suite(con, Thresholds()).success is passes
    assert model_suites.empty_slices(con) == (["cold"] if cold_users == 0 else [])
