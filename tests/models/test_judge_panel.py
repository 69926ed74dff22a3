"""The judge's validation panel on hand-made frames: who is on it, AUC and intervals with known answers, agreement."""
from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from models import judge_panel
from models.recommender import FeatureFrames

CUT = dt.datetime(2026, 11, 15)


def frames() -> FeatureFrames:
    """u1: b1 in train, b2 first touched in the holdout (a target); u2: b3 in train and again in the holdout
    (no target); u3: b4 in the holdout, but b4 was released during it (no target). b5 is released after the cut;
    b6 and b7 nobody touched."""
    rows = [("u1", "b1", "train"), ("u1", "b2", "holdout"), ("u2", "b3", "train"), ("u2", "b3", "holdout"),
            ("u3", "b4", "holdout"), ("u3", "b1", "train")]
    interactions = pl.DataFrame(rows, schema=["user_id", "item_id", "period"], orient="row").with_columns(
        item_type=pl.lit("audiobook"))
    released = {"b1": "2026-01-01", "b2": "2026-01-01", "b3": "2026-01-01", "b4": "2026-11-20", "b5": "2026-12-01",
                "b6": "2026-01-01", "b7": None}
    items = pl.DataFrame({"item_id": list(released), "item_type": "audiobook",
                          "release_date": pl.Series(list(released.values())).str.to_date()})
    splits = pl.DataFrame({"split": ["train", "holdout"], "start_at": [CUT - dt.timedelta(days=90), CUT],
                           "end_at": [CUT, CUT + dt.timedelta(days=14)]})
    return FeatureFrames(interactions=interactions, user_stats=pl.DataFrame(), item_stats=pl.DataFrame(),
                         items=items, splits=splits)


def test_panel_pairs_a_holdout_target_with_an_unconsumed_released_item() -> None:
    panel = judge_panel.panel(frames(), "audiobook", ["u1", "u2", "u3"], users=10, seed=0)
    assert panel["user_id"].unique().to_list() == ["u1"]  # u2 re-listened, u3's item was not yet released
    positive = panel.filter(pl.col("label"))["item_id"].to_list()
    negative = panel.filter(~pl.col("label"))["item_id"].to_list()
    assert positive == ["b2"]
    assert negative[0] in {"b3", "b6", "b7"}  # released before the cut (b7: unknown date counts), never touched


def test_negatives_never_come_from_the_users_history_and_the_draw_is_seeded() -> None:
    drawn = {judge_panel.panel(frames(), "audiobook", ["u1"], users=1, seed=seed)
             .filter(~pl.col("label"))["item_id"].item() for seed in range(30)}
    assert drawn == {"b3", "b6", "b7"}
    again = [judge_panel.panel(frames(), "audiobook", ["u1"], users=1, seed=4).to_dicts() for _ in range(2)]
    assert again[0] == again[1]
    assert judge_panel.panel(frames(), "audiobook", ["u2"], users=5, seed=0).height == 0  # not eligible for it


def test_a_user_who_touched_nearly_the_whole_catalogue_gets_its_one_unconsumed_item() -> None:
    ids = [f"b{n:02d}" for n in range(100)]
    rows = [("u1", item, "train") for item in ids[:99] if item != "b50"] + [("u1", "b50", "holdout")]
    interactions = pl.DataFrame(rows, schema=["user_id", "item_id", "period"], orient="row").with_columns(
        item_type=pl.lit("audiobook"))
    items = pl.DataFrame({"item_id": ids, "item_type": "audiobook", "release_date": dt.date(2026, 1, 1)})
    world = FeatureFrames(interactions=interactions, user_stats=pl.DataFrame(), item_stats=pl.DataFrame(),
                          items=items, splits=frames().splits)
    for seed in range(5):  # most seeds draw 16 touched items first: the whole catalogue is then searched
        panel = judge_panel.panel(world, "audiobook", ["u1"], users=1, seed=seed)
        assert panel.select("item_id", "label").rows() == [("b50", True), ("b99", False)]


def test_the_llm_panel_is_a_seeded_subset_of_the_reference_panel() -> None:
    reference = pl.DataFrame({"user_id": [f"u{n}" for n in range(20) for _ in range(2)],
                              "item_id": [f"b{n}" for n in range(40)], "label": [True, False] * 20})
    subset = judge_panel.subset(reference, 5, seed=3)
    assert subset["user_id"].n_unique() == 5 and subset.height == 10
    assert subset.join(reference, on=["user_id", "item_id", "label"], how="anti").is_empty()
    assert subset.equals(judge_panel.subset(reference, 5, seed=3))
    assert judge_panel.subset(reference, 50, seed=3).equals(reference)


def test_the_pairwise_panel_holds_only_users_whose_two_lists_differ_in_held_out_items() -> None:
    lists = pl.DataFrame({"model": ["m1", "m2"] * 4, "user_id": ["u1", "u1", "u2", "u2", "u3", "u3", "u4", "u4"],
                          "item_id": ["a", "b", "a", "a", "c", "b", "a", "c"]})
    targets = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "item_id": ["a", "a", "b", "z"]})
    # u1: m1 holds a hit, m2 not; u2: both hold it; u3: m2 holds it; u4: neither
    chosen = judge_panel.pairwise_panel(lists, targets, [("m1", "m2")], users=5, seed=0)
    assert chosen.rows() == [("u1", "m1", "m2"), ("u3", "m1", "m2")]
    one = judge_panel.pairwise_panel(lists, targets, [("m1", "m2")], users=1, seed=0)
    assert one.height == 1 and one["user_id"].item() in {"u1", "u3"}
    assert judge_panel.pairwise_panel(lists, targets, [], users=5, seed=0).is_empty()


def test_roc_auc_matches_a_hand_count() -> None:
    # pairs (pos, neg) that a positive wins: 0.9 beats all 3; 0.5 beats 0.1, ties 0.5 (half), loses to 0.7;
    # 0.4 beats 0.1 only: (3 + 1.5 + 1) / 9
    assert judge_panel.roc_auc(np.array([0.9, 0.5, 0.4]), np.array([0.1, 0.5, 0.7])) == pytest.approx(5.5 / 9)
    assert judge_panel.roc_auc(np.array([1.0, 1.0]), np.array([0.0, 0.0])) == 1.0
    assert judge_panel.roc_auc(np.array([0.3, 0.3]), np.array([0.3, 0.3])) == 0.5


def test_auc_interval_is_seeded_and_holds_the_estimate() -> None:
    rng = np.random.default_rng(7)
    positive, negative = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 200)
    found = judge_panel.auc_interval(positive, negative, seed=3)
    assert found == judge_panel.auc_interval(positive, negative, seed=3)
    assert found.low < found.value < found.high
    assert found.value == pytest.approx(0.76, abs=0.05)  # Phi(1 / sqrt 2) = 0.760 for unit-gap normals
    assert 0.05 < found.high - found.low < 0.15  # about +-1.96 standard errors of an AUC on 200 pairs
    chance = judge_panel.auc_interval(rng.normal(size=200), rng.normal(size=200), seed=3)
    assert chance.low < 0.5 < chance.high
    assert judge_panel.auc_interval(np.array([]), np.array([]), seed=0) is None


def test_panel_rows_say_uninformative_when_the_interval_holds_one_half_or_pairs_are_few() -> None:
    users = [f"u{n:02d}" for n in range(40)]
    separated = pl.DataFrame({"user_id": users * 2, "label": [True] * 40 + [False] * 40,
                              "score": [0.9] * 40 + [0.1] * 40})
    row = judge_panel.panel_row("sbert_sim", "cosine", separated, 40, seed=0)
    assert (row["value"], row["ci_low"], row["ci_high"], row["pairs"], row["informative"]) == (1.0, 1.0, 1.0, 40, True)
    few = judge_panel.panel_row("sbert_sim", "cosine", separated.filter(pl.col("user_id") < "u05"), 40, seed=0)
    assert few["value"] == 1.0 and few["pairs"] == 5 and few["informative"] is False  # fewer than MIN_PAIRS
    flat = judge_panel.panel_row("llm", "verdict", separated.with_columns(score=pl.lit(1.0)), 40, seed=0)
    assert flat["value"] == 0.5 and flat["informative"] is False
    unscored = judge_panel.panel_row("llm", "p_aligned", separated.with_columns(score=pl.lit(None, pl.Float64)), 40, 0)
    assert unscored["value"] is None and unscored["pairs"] == 0 and unscored["informative"] is None


def test_llm_scores_use_p_aligned_only_when_every_answer_has_one() -> None:
    rows = pl.DataFrame({"verdict": ["aligned", "not_aligned", None], "p_aligned": [0.7, 0.4, None]})
    scored, scored_by = judge_panel.llm_scores(rows)
    assert scored_by == "p_aligned" and scored["score"].to_list() == [0.7, 0.4, None]
    scored, scored_by = judge_panel.llm_scores(rows.with_columns(p_aligned=pl.Series([0.7, None, None])))
    assert scored_by == "verdict" and scored["score"].to_list() == [1.0, 0.0, None]


def test_agreement_counts_decided_judgements_against_holdout_hits() -> None:
    lists = pl.DataFrame({"model": ["2t", "2t", "pop", "pop"] * 3,
                          "user_id": ["u1"] * 4 + ["u2"] * 4 + ["u3"] * 4,
                          "item_id": ["h1", "x", "y", "z", "y", "z", "h2", "x", "x", "y", "z", "w"]})
    targets = pl.DataFrame({"user_id": ["u1", "u2"], "item_id": ["h1", "h2"]})
    hits = judge_panel.holdout_hits(lists, targets)
    assert sorted(hits.rows()) == [("u1", "2t", 1), ("u1", "pop", 0), ("u2", "2t", 0), ("u2", "pop", 1),
                                   ("u3", "2t", 0), ("u3", "pop", 0)]
    judgements = pl.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2", "u3", "u3"], "model_a": "2t", "model_b": "pop",
        # u1: both orders pick 2t (right, twice); u2: 'A' both times = 2t then pop (one wrong, one right);
        # u3: hits tie, so neither order is decided
        "winner": ["2t", "2t", "2t", "pop", "2t", "pop"]})
    (row,) = judge_panel.agreement_rows("llm", "each_order", judgements, hits, seed=0)
    assert (row["model_a"], row["model_b"], row["value"], row["pairs"], row["users"]) == ("2t", "pop", 0.75, 4, 3)
    tied = judgements.with_columns(winner=pl.lit("tie"))
    (none,) = judge_panel.agreement_rows("llm", "each_order", tied, hits, seed=0)
    assert none["value"] is None and none["pairs"] == 0 and none["informative"] is None


def test_sbert_picks_the_list_closer_to_the_profile() -> None:
    lists = pl.DataFrame({"model": ["2t", "pop"], "user_id": ["u1", "u1"], "item_id": ["near", "far"]})
    users = pl.DataFrame({"user_id": ["u1"], "embedding": [[1.0, 0.0]]})
    items = pl.DataFrame({"item_id": ["near", "far"], "embedding": [[0.9, 0.1], [0.0, 1.0]]})
    shown = lists.select("user_id", "item_id")
    scores = shown.with_columns(score=judge_panel.cosine(shown, users, items))
    assert scores["score"][1] == pytest.approx(0.0) and scores["score"][0] == pytest.approx(0.9 / np.hypot(0.9, 0.1))
    winners = judge_panel.list_winners(lists, scores, [("2t", "pop")])
    assert winners.select("user_id", "winner").rows() == [("u1", "2t")]
    assert judge_panel.cosine(shown, None, items).null_count() == 2  # before enrichment embedded anyone


def test_validation_names_the_better_judge() -> None:
    users = [f"u{n:02d}" for n in range(30)]
    rng = np.random.default_rng(0)
    panel_rows = pl.DataFrame({
        "user_id": users * 2, "item_id": [f"p{n}" for n in range(30)] + [f"n{n}" for n in range(30)],
        "label": [True] * 30 + [False] * 30, "verdict": "aligned", "p_aligned": rng.random(60),
        "sbert_sim": np.r_[rng.normal(1, 0.3, 30), rng.normal(0, 0.3, 30)]})
    empty = pl.DataFrame(schema={"user_id": pl.String, "model_a": pl.String, "model_b": pl.String,
                                 "order": pl.String, "verdict": pl.String})
    rows = judge_panel.validation(panel_rows, empty, pl.DataFrame(), None, [], None, None, 30, seed=0)
    assert rows["judge"].to_list() == ["llm", "sbert_sim"] and rows["scored_by"].to_list() == ["p_aligned", "cosine"]
    verdicts = judge_panel.verdicts(rows)
    assert verdicts["sbert_sim_auc"].endswith(": informative")
    assert verdicts["llm_auc"].endswith("judge uninformative")
    assert verdicts["better_judge"].startswith("sbert_sim (AUC 0.997 vs llm 0.556)")
    assert verdicts["better_judge"].endswith("intervals apart")
