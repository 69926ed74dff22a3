"""bench/quality.py's per-slice verdict: what is served against the best baseline on the holdout."""
from __future__ import annotations

import polars as pl

from bench import quality


def metrics(rows: list[tuple[str, str, str, float | None, float, int]]) -> pl.DataFrame:
    """(split, model, slice, value, std_error, users) rows of eval.offline_metrics' hr@10."""
    return pl.DataFrame(
        [{"split": split, "model": model, "slice": slice_name, "metric": "hr@10", "value": value,
          "std_error": se, "users": users} for split, model, slice_name, value, se, users in rows],
        schema={"split": pl.String, "model": pl.String, "slice": pl.String, "metric": pl.String,
                "value": pl.Float64, "std_error": pl.Float64, "users": pl.Int64})


def test_served_holds_within_one_standard_error_of_the_best_baseline_and_ablations_are_not_baselines() -> None:
    frame = metrics([
        ("holdout", "served", "cold", 0.82, 0.03, 100),
        ("holdout", "ease", "cold", 0.84, 0.02, 100),  # best baseline; 0.82 >= 0.84 - 0.03 holds
        ("holdout", "popularity", "cold", 0.50, 0.05, 100),
        ("holdout", "two_tower_hgnn", "cold", 0.79, 0.03, 100),
        ("holdout", "two_tower_hgnn_no_llm_features", "cold", 0.95, 0.03, 100),  # an ablation: never the baseline
        ("holdout", "served", "warm", 0.40, 0.01, 80),
        ("holdout", "item_knn", "warm", 0.45, 0.02, 80),  # 0.40 < 0.45 - 0.02: does not hold
        ("holdout", "two_tower", "warm", 0.60, 0.02, 80),  # an ablation
        ("valid", "served", "warm", 0.10, 0.01, 80),  # another split: not read
        ("valid", "item_knn", "warm", 0.90, 0.01, 80),
        ("holdout", "served", "long_tail", None, 0.0, 0),  # a slice without users: no verdict
        ("holdout", "ease", "long_tail", None, 0.0, 0),
    ])
    checked = quality.verdicts(frame)
    assert checked.select("slice", "best_baseline", "holds").rows() == [("warm", "item_knn", False),
                                                                         ("cold", "ease", True)]
    cold = checked.row(1, named=True)
    assert abs(cold["two_tower_hgnn_margin"] - (0.79 - 0.84)) < 1e-12
    assert checked.row(0, named=True)["two_tower_hgnn_margin"] is None


def test_a_slice_without_a_served_row_or_a_baseline_gets_no_verdict() -> None:
    frame = metrics([("holdout", "ease", "cold", 0.8, 0.02, 10), ("holdout", "served", "warm", 0.4, 0.02, 10),
                     ("holdout", "two_tower_hgnn", "warm", 0.5, 0.02, 10)])
    assert quality.verdicts(frame).height == 0
