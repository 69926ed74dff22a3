"""The judge's prompts, schemas, order-swap agreement and summary rates, on hand-made verdicts."""
import json
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from models import judge
from models.enrichment import run_batch
from models.llm import Completion
from warehouse.enrichment_tables import BufferedCache

PAIR_COLUMNS = ("user_id", "model_a", "model_b", "order", "verdict")


def pairwise(rows: list[tuple[str, str, str, str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={name: pl.String for name in PAIR_COLUMNS}, orient="row")


def test_a_win_counts_only_when_both_orders_name_the_same_model() -> None:
    verdicts = pairwise([
        ("u1", "2t", "pop", "ab", "A"), ("u1", "2t", "pop", "ba", "B"),    # 2t shown first, then second: 2t both times
        ("u2", "2t", "pop", "ab", "A"), ("u2", "2t", "pop", "ba", "A"),    # position bias: always A -> tie
        ("u3", "2t", "pop", "ab", "B"), ("u3", "2t", "pop", "ba", "A"),    # pop both times
        ("u4", "2t", "pop", "ab", "tie"), ("u4", "2t", "pop", "ba", "B"),  # one tie -> tie
        ("u5", "2t", "pop", "ab", "A"), ("u5", "2t", "pop", "ba", None),   # second order unanswered -> undecided
    ])
    combined = judge.combine_orders(verdicts).sort("user_id")
    assert combined["final_winner"].to_list() == ["2t", "tie", "pop", "tie", None]
    assert combined["is_consistent"].to_list() == [True, False, True, False, False]


def test_order_winners_reads_list_a_as_model_b_in_the_swapped_order() -> None:
    verdicts = pairwise([("u1", "2t", "pop", "ab", "A"), ("u1", "2t", "pop", "ba", "A"),
                         ("u1", "2t", "pop", "ab", "tie")])
    assert judge.order_winners(verdicts)["winner"].to_list() == ["2t", "pop", "tie"]


def test_summary_reports_positive_tie_win_rates_and_holdout_agreement() -> None:
    point = pl.DataFrame({
        "verdict": ["aligned", "aligned", "not_aligned", "not_aligned", None],
        "confidence": ["high", "low", "high", "medium", None],
        "in_holdout": [True, False, False, True, True],
    })
    combined = judge.combine_orders(pairwise([
        ("u1", "2t", "pop", "ab", "A"), ("u1", "2t", "pop", "ba", "B"),
        ("u2", "2t", "pop", "ab", "A"), ("u2", "2t", "pop", "ba", "A"),
        ("u3", "2t", "pop", "ab", "A"), ("u3", "2t", "pop", "ba", "B"),
        ("u4", "2t", "pop", "ab", "B"), ("u4", "2t", "pop", "ba", "A"),
    ]))
    rates = judge.summary(point, combined)
    assert rates["pointwise_judged"] == 4 and rates["pointwise_unanswered"] == 1
    assert rates["positive_rate"] == 0.5
    assert rates["holdout_confusion"] == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert rates["holdout_agreement"] == 0.5
    assert rates["holdout_agreement_high_confidence"] == 1.0  # the two high-confidence verdicts are both right
    assert rates["tie_rate"] == 0.25
    assert rates["pairs"] == [{"model_a": "2t", "model_b": "pop", "comparisons": 4, "win_rate_a": 0.5,
                               "win_rate_b": 0.25, "tie_rate": 0.25}]


def test_pairwise_orders_show_each_list_first_once() -> None:
    lists = {"2t": [{"item_id": "a1", "title": "Deep Space", "item_type": "audiobook", "genres": ["science"]}],
             "pop": [{"item_id": "a2", "title": "Top Crime", "item_type": "audiobook", "genres": ["crime"]}]}
    (order_ab, ab), (order_ba, ba) = judge.pairwise_pair("u1", "likes space", "2t", "pop", lists)
    assert (order_ab, order_ba) == ("ab", "ba")
    text_ab, text_ba = ab.messages[1]["content"], ba.messages[1]["content"]
    assert text_ab.index("Deep Space") < text_ab.index("Top Crime")
    assert text_ba.index("Top Crime") < text_ba.index("Deep Space")
    assert "2t" not in text_ab and "pop" not in text_ab  # blinded: model names never reach the prompt
    assert ab.input_hash != ba.input_hash


def test_profile_prefers_the_narrative_and_falls_back_to_facts() -> None:
    facts = json.dumps({"type_shares": {"podcast": 0.7, "music": 0.3}, "top_topics": ["space", "history"],
                        "top_items": [{"title": "Orbit", "item_type": "podcast", "completion_rate": 0.9}]})
    narrative = json.dumps({key: f"{key} text" for key in (
        "listening_habits", "engagement_depth", "format_preference", "exploration_vs_specialization",
        "cross_disciplinary_curiosity")} | {"interests": ["rockets"], "per_episode_interests": []})
    assert "interests: rockets" in judge.profile_text(narrative, facts)
    from_facts = judge.profile_text(None, facts)
    assert "podcast 70%" in from_facts and "space, history" in from_facts and '"Orbit"' in from_facts


def test_verdict_schemas_reject_answers_outside_the_choices() -> None:
    with pytest.raises(ValidationError):
        judge.PairwiseJudgement.model_validate({"rationale": "x", "verdict": "C", "confidence": "high"})
    with pytest.raises(ValidationError):
        judge.PointwiseJudgement.model_validate({"rationale": "x", "aligned": True, "confidence": "sure"})


def test_cohort_is_seeded_and_ignores_input_order() -> None:
    ids = [f"u{n}" for n in range(50)]
    first = judge.sample_cohort(ids, 5, seed=3)
    assert first == judge.sample_cohort(list(reversed(ids)), 5, seed=3)
    assert len(set(first)) == 5 and first != judge.sample_cohort(ids, 5, seed=4)
    assert judge.sample_cohort(ids[:3], 5, seed=3) == ["u0", "u1", "u2"]


class ScriptedJudge:
    """A chat model that answers 'A' to every pairwise prompt: the position bias the order swap exists for."""

    name = "scripted"
    max_concurrency = 1

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any], *, max_tokens: int,
                 temperature: float, seed: int) -> Completion:
        self.calls += 1
        return Completion(json.dumps({"rationale": "A reads better", "verdict": "A", "confidence": "high"}),
                          10, 10, 0.0, "stop")


def test_a_judge_that_always_says_a_wins_nothing_and_reruns_are_cached() -> None:
    lists = {"2t": [{"item_id": "a1", "title": "One"}], "pop": [{"item_id": "a2", "title": "Two"}]}
    requests = [request for _, request in judge.pairwise_pair("u1", "profile", "2t", "pop", lists)]
    model, cache = ScriptedJudge(), BufferedCache({})  # the judge asset's cache, empty
    batch = run_batch(model, requests, cache, budget=4)
    verdicts = pairwise([("u1", "2t", "pop", order, result.output["verdict"])
                         for order, result in zip(("ab", "ba"), batch.results)])
    assert judge.combine_orders(verdicts)["final_winner"].to_list() == ["tie"]
    again = run_batch(model, requests, cache, budget=4)
    assert (model.calls, again.cache_hits) == (2, 2)
