"""Offline metrics on hand-made lists whose answers are worked out by hand in the comments."""
import math

import polars as pl
import pytest

from models.metrics import offline_metrics, slice_targets

# u1 (warm) wants a (tier 1) and b (tier 4); u2 (cold) wants c (tier 2); u3 (cold) wants d (tier 5), gets no list.
TARGETS = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u3"], "item_id": ["a", "b", "c", "d"]})
USER_STATS = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "is_warm": [True, False, False]})
ITEM_STATS = pl.DataFrame({"item_id": ["a", "b", "c", "d", "x", "y"], "popularity_tier": [1, 4, 2, 5, 1, 1]})
LISTS = pl.DataFrame({
    "user_id": ["u1", "u1", "u1", "u1", "u2", "u2"],
    "item_id": ["x", "a", "y", "b", "c", "x"],
    "rank": [1, 2, 3, 12, 1, 2],
})
G2, G12 = 1 / math.log2(3), 1 / math.log2(13)  # gains of a hit at rank 2 and rank 12


@pytest.fixture(scope="module")
def scores() -> dict[tuple[str, str], dict]:
    frame = offline_metrics(LISTS, TARGETS, USER_STATS, ITEM_STATS, catalogue_size=10, k=20, list_length=100)
    return {(row["slice"], row["metric"]): row for row in frame.iter_rows(named=True)}


def value(scores: dict, slice_name: str, metric: str) -> float:
    return scores[(slice_name, metric)]["value"]


def test_hit_rate_counts_users_with_a_hit_in_the_top_10(scores: dict) -> None:
    assert value(scores, "all", "hr@10") == pytest.approx(2 / 3)  # u1 (a at 2), u2 (c at 1); u3 none


def test_mrr_uses_the_first_relevant_rank(scores: dict) -> None:
    assert value(scores, "all", "mrr@100") == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_recall_at_10_and_20(scores: dict) -> None:
    assert value(scores, "all", "recall@10") == pytest.approx((1 / 2 + 1 + 0) / 3)  # b at 12 misses the top 10
    assert value(scores, "all", "recall@20") == pytest.approx((1 + 1 + 0) / 3)


def test_ndcg_divides_by_the_ideal_list(scores: dict) -> None:
    u1_at_10 = G2 / (1 + G2)  # ideal: both targets at ranks 1 and 2
    u1_at_20 = (G2 + G12) / (1 + G2)
    assert value(scores, "all", "ndcg@10") == pytest.approx((u1_at_10 + 1 + 0) / 3)
    assert value(scores, "all", "ndcg@20") == pytest.approx((u1_at_20 + 1 + 0) / 3)


def test_coverage_counts_distinct_items_of_the_slice_over_the_catalogue(scores: dict) -> None:
    assert value(scores, "all", "coverage@100") == pytest.approx(5 / 10)  # x, a, y, b, c
    assert value(scores, "warm", "coverage@100") == pytest.approx(4 / 10)  # u1's x, a, y, b
    assert scores[("all", "coverage@100")]["std_error"] is None


def test_users_without_a_list_count_as_misses_and_as_not_served(scores: dict) -> None:
    assert value(scores, "cold", "hr@10") == pytest.approx(1 / 2)
    assert value(scores, "cold", "served") == pytest.approx(1 / 2)
    assert scores[("cold", "hr@10")]["users"] == 2


def test_standard_error_is_sample_deviation_over_root_n(scores: dict) -> None:
    # hr@10 of all = (1, 1, 0): sample std sqrt(1/3), over sqrt(3) -> 1/3
    assert scores[("all", "hr@10")]["std_error"] == pytest.approx(1 / 3)
    assert scores[("cold", "hr@10")]["std_error"] == pytest.approx(0.5)  # (1, 0): std 0.7071 / sqrt(2)


def test_warm_slice_holds_only_warm_users(scores: dict) -> None:
    assert scores[("warm", "mrr@100")]["users"] == 1
    assert value(scores, "warm", "mrr@100") == pytest.approx(1 / 2)


def test_long_tail_slice_counts_only_long_tail_targets(scores: dict) -> None:
    # u1's relevant set shrinks to b (rank 12); u3 keeps d (no list). a at rank 2 no longer counts.
    assert scores[("long_tail", "hr@10")]["users"] == 2
    assert value(scores, "long_tail", "hr@10") == 0.0
    assert value(scores, "long_tail", "mrr@100") == pytest.approx((1 / 12) / 2)
    assert value(scores, "long_tail", "recall@20") == pytest.approx(1 / 2)
    assert value(scores, "long_tail", "ndcg@20") == pytest.approx(G12 / 2)


def test_every_slice_reports_every_metric(scores: dict) -> None:
    metrics = {"hr@10", "mrr@100", "recall@10", "recall@20", "ndcg@10", "ndcg@20", "served", "coverage@100"}
    for slice_name in ("all", "warm", "cold", "long_tail"):
        assert {m for s, m in scores if s == slice_name} == metrics


def test_lists_beyond_list_length_are_cut() -> None:
    frame = offline_metrics(LISTS, TARGETS, USER_STATS, ITEM_STATS, catalogue_size=10, k=10, list_length=10)
    row = frame.filter((pl.col("slice") == "warm") & (pl.col("metric") == "coverage@10"))
    assert row["value"].item() == pytest.approx(3 / 10)  # b at rank 12 is gone


def test_unknown_items_are_tier_5_and_unknown_users_cold() -> None:
    targets = pl.DataFrame({"user_id": ["stranger"], "item_id": ["new"]})
    sliced = slice_targets(targets, USER_STATS, ITEM_STATS)
    assert sorted(sliced["slice"].to_list()) == ["all", "cold", "long_tail"]


def test_no_targets_report_every_slice_empty() -> None:
    frame = offline_metrics(LISTS, TARGETS.clear(), USER_STATS, ITEM_STATS, catalogue_size=10)
    assert frame.columns == ["slice", "metric", "value", "std_error", "users"]
    assert frame.height == 4 * 10  # four slices x ten metrics (recall and ndcg at 10, 20, 100), none scored
    assert frame["users"].unique().to_list() == [0] and frame["value"].null_count() == frame.height


def test_a_slice_without_users_is_reported_empty_beside_the_scored_ones() -> None:
    warm_only = TARGETS.join(USER_STATS.filter(pl.col("is_warm")).select("user_id"), on="user_id", how="semi")
    frame = offline_metrics(LISTS, warm_only, USER_STATS, ITEM_STATS, catalogue_size=10, k=10, list_length=10)
    users = dict(frame.filter(pl.col("metric") == "hr@10").select("slice", "users").iter_rows())
    assert users["cold"] == 0 and users["warm"] == users["all"] > 0
    cold = frame.filter(pl.col("slice") == "cold")
    assert cold.height == 8 and cold["value"].null_count() == 8  # hr, mrr, recall and ndcg @10 @20, served, coverage
    assert frame["slice"].unique(maintain_order=True).to_list() == ["all", "warm", "cold", "long_tail"]


def test_k_longer_than_the_lists_is_rejected() -> None:
    with pytest.raises(ValueError, match="k <= list_length"):
        offline_metrics(LISTS, TARGETS, USER_STATS, ITEM_STATS, catalogue_size=10, k=200, list_length=100)
