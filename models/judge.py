"""Profile-aware LLM judge: pointwise and pairwise prompts, verdict schemas, order-swap agreement, summary rates.

Every schema asks for the verdict first: a truncated answer still carries it, and the verdict's probability
can be read from the first value token's log-probabilities (models.logprobs), P(aligned) for a pointwise one.
Pairwise lists are judged in both orders (A/B swapped); a model wins a comparison only when both orders
name it, and any disagreement counts as a tie: LLM judges favour a position (Zheng et al., arXiv 2306.05685).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, StringConstraints

from models.enrichment import EnrichRequest, EnrichResult

POINTWISE_VERSION = "judge_pointwise.v2"
PAIRWISE_VERSION = "judge_pairwise.v2"
PANEL_VERSION = "judge_panel.v1"
# Sized for the rationale's cap in the schema (240 characters, about 60 tokens of English; llama.cpp's grammar
# enforces it); a cut answer is retried as invalid, and the verdict comes first either way.
POINTWISE_MAX_TOKENS = 112
PAIRWISE_MAX_TOKENS = 128
PANEL_MAX_TOKENS = 16  # '{"aligned": false}' is 5 to 8 tokens, whitespace included
TOP_LOGPROBS = 10  # alternatives per token asked for P(aligned); OpenAI allows at most 20
DESCRIPTION_CHARS = 160  # a 135M model with a 2k context reads a few lines per item well
ORDERS = ("ab", "ba")  # 'ab' shows model_a's list as A; 'ba' shows it as B
# 'pairwise': the cohort's comparisons (its win rates); 'panel_pairwise': the validation panel's, users chosen
# because their two lists hold different numbers of held-out items
PAIRWISE_KINDS = ("pairwise", "panel_pairwise")

REQUEST_SCHEMA = {name: pl.String for name in ("entity_id", "kind", "user_id", "item_id", "model", "model_a",
                                               "model_b", "order")}

Rationale = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=240)]
Confidence = Literal["low", "medium", "high"]

SYSTEM = ("You judge recommendations for one listener, using only their profile. Be critical: say an item "
          "does not fit unless the profile supports it. Answer with JSON only.")
POINTWISE_INSTRUCTION = ("Does this item fit the listener's interests? Return JSON: aligned (true or false), "
                         "confidence (low, medium or high), rationale (one short sentence).")
PANEL_INSTRUCTION = "Does this item fit the listener's interests? Return JSON: aligned (true or false)."
PAIRWISE_INSTRUCTION = ("Which list fits the listener better, judging relevance to their interests and variety? "
                        "Return JSON: verdict (A, B or tie), confidence (low, medium or high), rationale (one or two "
                        "short sentences on strengths and weaknesses of each list).")


class PointwiseJudgement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aligned: bool
    confidence: Confidence
    rationale: Rationale


class PanelVerdict(BaseModel):
    """The validation panel's pointwise question, the verdict alone: its P(aligned) is what is measured."""

    model_config = ConfigDict(extra="forbid")

    aligned: bool


class PairwiseJudgement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["A", "B", "tie"]
    confidence: Confidence
    rationale: Rationale


def profile_text(narrative_json: str | None, facts_json: str) -> str:
    """The listener as the judge reads them: the LLM narrative where there is one, else the SQL facts."""
    facts = json.loads(facts_json)
    lines = []
    if narrative_json:
        narrative = json.loads(narrative_json)
        for key in ("listening_habits", "engagement_depth", "format_preference", "exploration_vs_specialization",
                    "cross_disciplinary_curiosity"):
            lines.append(f"{key.replace('_', ' ')}: {narrative[key]}")
        lines.append("interests: " + ", ".join(narrative["interests"]))
    else:
        shares = ", ".join(f"{kind} {share:.0%}" for kind, share in sorted(facts["type_shares"].items(),
                                                                          key=lambda kv: -kv[1]))
        lines.append(f"plays by type: {shares or 'none'}")
        if facts.get("top_topics"):
            lines.append("top topics: " + ", ".join(facts["top_topics"]))
    titles = [f'"{item["title"]}" ({item["item_type"]}, {item["completion_rate"]:.0%} finished)'
              for item in facts.get("top_items", [])[:5]]
    if titles:
        lines.append("recently engaged with: " + "; ".join(titles))
    return "\n".join(lines)


def item_text(item: dict[str, Any]) -> str:
    """One line per item: title, type, genres and the start of its description."""
    genres = ", ".join(item.get("genres") or []) or "-"
    description = (item.get("description") or "").strip().replace("\n", " ")[:DESCRIPTION_CHARS]
    return f'"{item.get("title") or item["item_id"]}" ({item.get("item_type") or "item"}; {genres}): {description}'


def pointwise_request(user_id: str, profile: str, item: dict[str, Any]) -> EnrichRequest:
    """Profile + one candidate -> aligned, confidence, rationale, and P(aligned). entity_id is 'user_id|item_id'."""
    prompt = f"Listener profile:\n{profile}\n\nCandidate item:\n{item_text(item)}\n\n{POINTWISE_INSTRUCTION}"
    return EnrichRequest(
        entity_id=f"{user_id}|{item['item_id']}", prompt_version=POINTWISE_VERSION,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        output_type=PointwiseJudgement, max_tokens=POINTWISE_MAX_TOKENS, top_logprobs=TOP_LOGPROBS,
    )


def panel_request(user_id: str, profile: str, item: dict[str, Any]) -> EnrichRequest:
    """Profile + one panel item -> aligned, and P(aligned). The profile leads the prompt, so a user's two panel
    items share its prefix (llama.cpp reuses the evaluated prefix). entity_id is 'panel|user_id|item_id'."""
    prompt = f"Listener profile:\n{profile}\n\nCandidate item:\n{item_text(item)}\n\n{PANEL_INSTRUCTION}"
    return EnrichRequest(
        entity_id=f"panel|{user_id}|{item['item_id']}", prompt_version=PANEL_VERSION,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        output_type=PanelVerdict, max_tokens=PANEL_MAX_TOKENS, top_logprobs=TOP_LOGPROBS,
    )


def pairwise_request(user_id: str, profile: str, list_a: Sequence[dict[str, Any]],
                     list_b: Sequence[dict[str, Any]], entity_id: str) -> EnrichRequest:
    """Profile + two blinded ranked lists (shown as A and B) -> rationale, verdict A|B|tie, confidence."""
    shown = "\n".join(f"{n}. {item_text(item)}" for n, item in enumerate(list_a, 1))
    other = "\n".join(f"{n}. {item_text(item)}" for n, item in enumerate(list_b, 1))
    prompt = (f"Listener profile:\n{profile}\n\nList A:\n{shown}\n\nList B:\n{other}\n\n{PAIRWISE_INSTRUCTION}")
    return EnrichRequest(
        entity_id=entity_id, prompt_version=PAIRWISE_VERSION,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        output_type=PairwiseJudgement, max_tokens=PAIRWISE_MAX_TOKENS,
    )


def pairwise_pair(user_id: str, profile: str, model_a: str, model_b: str, lists: dict[str, list[dict[str, Any]]],
                  prefix: str = "") -> list[tuple[str, EnrichRequest]]:
    """Both orders of one comparison: [('ab', A = model_a's list), ('ba', A = model_b's list)]. The same prompt
    under another entity_id prefix (the validation panel's) shares its cached answer."""
    first, second = lists[model_a], lists[model_b]
    key = f"{prefix}{user_id}|{model_a}|{model_b}"
    return [
        ("ab", pairwise_request(user_id, profile, first, second, f"{key}|ab")),
        ("ba", pairwise_request(user_id, profile, second, first, f"{key}|ba")),
    ]


def _user_lists(lists: pl.DataFrame, user_id: str) -> dict[str, list[dict[str, Any]]]:
    """One user's shown lists by model, items in rank order."""
    mine = lists.filter(pl.col("user_id") == user_id)
    return {model: part.sort("rank").to_dicts() for (model,), part in mine.group_by("model")}


def pairwise_panel_requests(compared: pl.DataFrame, profiles: pl.DataFrame, lists: pl.DataFrame
                            ) -> tuple[list[EnrichRequest], pl.DataFrame]:
    """The pairwise validation panel's requests, both orders of each (user_id, model_a, model_b) of `compared`
    (profiles: user_id, profile; lists: the shown lists with item text), and one row per request (kind
    'panel_pairwise')."""
    text = dict(profiles.select("user_id", "profile").iter_rows())
    requests, rows = [], []
    for user_id, model_a, model_b in compared.select("user_id", "model_a", "model_b").iter_rows():
        by_model = _user_lists(lists, user_id)
        if user_id not in text or model_a not in by_model or model_b not in by_model:
            continue
        for order, request in pairwise_pair(user_id, text[user_id], model_a, model_b, by_model, prefix="panel|"):
            requests.append(request)
            rows.append({"entity_id": request.entity_id, "kind": "panel_pairwise", "user_id": user_id,
                         "item_id": None, "model": None, "model_a": model_a, "model_b": model_b, "order": order})
    return requests, pl.DataFrame(rows, schema=REQUEST_SCHEMA)


def cohort_requests(cohort: pl.DataFrame, lists: pl.DataFrame, pairs: Sequence[tuple[str, str]], pointwise_model: str,
                    pointwise_items: int) -> tuple[list[EnrichRequest], pl.DataFrame]:
    """Requests user by user (pairwise orders side by side, then pointwise), so a spent budget leaves whole
    users for the next run; and one frame row per request describing it."""
    requests, rows = [], []
    for user_id, profile in cohort.select("user_id", "profile").iter_rows():
        by_model = _user_lists(lists, user_id)
        for model_a, model_b in pairs:
            if model_a not in by_model or model_b not in by_model:
                continue
            for order, request in pairwise_pair(user_id, profile, model_a, model_b, by_model):
                requests.append(request)
                rows.append({"entity_id": request.entity_id, "kind": "pairwise", "user_id": user_id, "item_id": None,
                             "model": None, "model_a": model_a, "model_b": model_b, "order": order})
        for item in by_model.get(pointwise_model, [])[: pointwise_items]:
            request = pointwise_request(user_id, profile, item)
            requests.append(request)
            rows.append({"entity_id": request.entity_id, "kind": "pointwise", "user_id": user_id,
                         "item_id": item["item_id"], "model": pointwise_model, "model_a": None,
                         "model_b": None, "order": None})
    return requests, pl.DataFrame(rows, schema=REQUEST_SCHEMA)


def answers_frame(results: Sequence[EnrichResult]) -> pl.DataFrame:
    """One row per judged request: verdict, P(aligned) (pointwise, when log-probabilities came back), confidence,
    rationale (or the error), status and cache key."""
    def verdict(result: EnrichResult) -> str | None:
        if result.status != "ok" or result.output is None:
            return None
        if "aligned" in result.output:
            return "aligned" if result.output["aligned"] else "not_aligned"
        return result.output["verdict"]

    def p_aligned(result: EnrichResult) -> float | None:
        if verdict(result) not in ("aligned", "not_aligned") or result.choices is None:
            return None
        return result.choices.get("true")

    return pl.DataFrame({
        "entity_id": [r.entity_id for r in results],
        "verdict": [verdict(r) for r in results],
        "p_aligned": [p_aligned(r) for r in results],
        "confidence": [(r.output or {}).get("confidence") for r in results],
        "rationale": [(r.output or {}).get("rationale") or r.error for r in results],
        "status": [r.status for r in results],
        "llm_model": [r.model for r in results],
        "prompt_version": [r.prompt_version for r in results],
        "input_hash": [r.input_hash for r in results],
    }, schema={"entity_id": pl.String, "verdict": pl.String, "p_aligned": pl.Float64, "confidence": pl.String,
               "rationale": pl.String,
               "status": pl.String, "llm_model": pl.String, "prompt_version": pl.String, "input_hash": pl.String})


def order_winners(pairwise: pl.DataFrame) -> pl.DataFrame:
    """Adds `winner`: the model one order's verdict favours ('tie' for a tie, null when not answered).

    In order 'ab' list A is model_a's; in order 'ba' list A is model_b's.
    """
    favours_a = (pl.col("order") == "ab") == (pl.col("verdict") == "A")
    return pairwise.with_columns(
        winner=pl.when(pl.col("verdict").is_null()).then(pl.lit(None, dtype=pl.String))
        .when(pl.col("verdict") == "tie").then(pl.lit("tie"))
        .when(favours_a).then(pl.col("model_a")).otherwise(pl.col("model_b"))
    )


def combine_orders(pairwise: pl.DataFrame) -> pl.DataFrame:
    """One row per (user_id, model_a, model_b), and per kind where rows have one, from rows with `order` and
    `verdict` (null = no answer): ab_winner, ba_winner, final_winner (the model both orders name, 'tie' when
    they differ or both tie, null while an order is unanswered) and is_consistent (both orders answered and
    agree)."""
    winners = order_winners(pairwise)
    keys = ["user_id", "model_a", "model_b"] + (["kind"] if "kind" in pairwise.columns else [])
    by_order = winners.group_by(*keys, maintain_order=True).agg(
        ab_winner=pl.col("winner").filter(pl.col("order") == "ab").first(),
        ba_winner=pl.col("winner").filter(pl.col("order") == "ba").first(),
    )
    complete = pl.col("ab_winner").is_not_null() & pl.col("ba_winner").is_not_null()
    return by_order.with_columns(
        final_winner=pl.when(~complete).then(pl.lit(None, dtype=pl.String))
        .when(pl.col("ab_winner") == pl.col("ba_winner")).then(pl.col("ab_winner"))
        .otherwise(pl.lit("tie")),
        is_consistent=complete & (pl.col("ab_winner") == pl.col("ba_winner")),
    )


def summary(pointwise: pl.DataFrame, combined: pl.DataFrame) -> dict[str, Any]:
    """Rates a person reads: pointwise positive rate and agreement with the holdout, pairwise ties and wins.

    pointwise: (verdict 'aligned'|'not_aligned'|null, confidence, in_holdout bool|null); combined: the
    output of `combine_orders`.
    """
    judged = pointwise.filter(pl.col("verdict").is_not_null())
    aligned = pl.col("verdict") == "aligned"
    out: dict[str, Any] = {"pointwise_judged": judged.height, "pointwise_unanswered": pointwise.height - judged.height}
    if judged.height:
        out["positive_rate"] = round(float(judged.select(aligned.mean()).item()), 4)
        high = judged.filter(pl.col("confidence") == "high")
        out["high_confidence_share"] = round(high.height / judged.height, 4)
    known = judged.filter(pl.col("in_holdout").is_not_null())
    if known.height:
        counts = known.select(
            tp=(aligned & pl.col("in_holdout")).sum(), fp=(aligned & ~pl.col("in_holdout")).sum(),
            fn=(~aligned & pl.col("in_holdout")).sum(), tn=(~aligned & ~pl.col("in_holdout")).sum(),
        ).row(0, named=True)
        out["holdout_judged"] = known.height
        out["holdout_agreement"] = round((counts["tp"] + counts["tn"]) / known.height, 4)
        out["holdout_confusion"] = {key: int(value) for key, value in counts.items()}
        high = known.filter(pl.col("confidence") == "high")
        if high.height:
            out["holdout_agreement_high_confidence"] = round(
                float(high.select((aligned == pl.col("in_holdout")).mean()).item()), 4)
    done = combined.filter(pl.col("final_winner").is_not_null())
    out["pairwise_compared"] = done.height
    out["pairwise_incomplete"] = combined.height - done.height
    if done.height:
        out["tie_rate"] = round(float(done.select((pl.col("final_winner") == "tie").mean()).item()), 4)
        out["order_consistency"] = round(float(done.select(pl.col("is_consistent").mean()).item()), 4)
    pairs = []
    for (model_a, model_b), rows in done.group_by("model_a", "model_b", maintain_order=True):
        n = rows.height
        pairs.append({
            "model_a": model_a, "model_b": model_b, "comparisons": n,
            "win_rate_a": round(int((rows["final_winner"] == model_a).sum()) / n, 4),
            "win_rate_b": round(int((rows["final_winner"] == model_b).sum()) / n, 4),
            "tie_rate": round(int((rows["final_winner"] == "tie").sum()) / n, 4),
        })
    out["pairs"] = pairs
    return out


def sample_cohort(user_ids: Sequence[str] | pl.Series, n: int, seed: int) -> list[str]:
    """n users drawn without replacement, the same for the same ids and seed whatever their order."""
    ids = sorted(set(pl.Series(user_ids, dtype=pl.String).to_list()))
    if n >= len(ids):
        return ids
    picked = np.random.default_rng(seed).choice(len(ids), size=n, replace=False)
    return [ids[i] for i in sorted(picked)]
