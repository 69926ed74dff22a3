"""The judge's validity: a seeded panel of held-out positives and unconsumed negatives, ROC-AUC with a bootstrap
interval per judge, and how often pairwise verdicts pick the list with more held-out items.

Panel: users with a holdout target (models.evaluate.scored_targets: a target-type item released before the cut,
first touched in the holdout); per user one target as the positive and, as the negative, one target-type item
released before the cut that the user never touched in any period. Each judge scores both; its ROC-AUC is the
chance a positive outscores a negative (ties count half), with a percentile interval from resampling users. A
judge is uninformative when that interval includes 0.5, or when it scored fewer than MIN_PAIRS pairs.
sBERT-Sim costs no LLM call, so it is also scored on a larger reference panel the LLM's panel is drawn from.

Pairwise: each answered order of a comparison is one judgement; it is decided when it names a list (not a
tie) and the two lists hold different numbers of held-out items; agreement is the share of decided judgements
that name the list with more. A judge that always says 'A' agrees half the time. The pairwise panel holds,
per pair, seeded users whose two lists hold different numbers of held-out items: each of its judgements is
decided, so agreement is measured every night rather than left to chance ties.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import polars as pl
from scipy.stats import rankdata

from models.enrichment import EnrichRequest
from models.evaluate import HOLDOUT, scored_targets
from models.judge import order_winners, panel_request, sample_cohort
from models.recommender import FeatureFrames

VALIDATION_SCHEMA = {"judge": pl.String, "metric": pl.String, "model_a": pl.String, "model_b": pl.String,
                     "scored_by": pl.String, "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
                     "pairs": pl.Int64, "users": pl.Int64, "informative": pl.Boolean}
RESAMPLES = 1000
LEVEL = 0.95
MIN_PAIRS = 10  # fewer pairs than this and a percentile interval is too rough to call a judge informative
COMPARED_SCHEMA = {"user_id": pl.String, "model_a": pl.String, "model_b": pl.String}
NEGATIVE_DRAWS = 16  # catalogue items drawn per panel user, the first one it never touched is its negative


class Interval(NamedTuple):
    value: float
    low: float
    high: float


def holdout_targets(frames: FeatureFrames, target_type: str) -> pl.DataFrame:
    """(user_id, item_id) the offline metrics score: released before the cut, first touched in the holdout."""
    return scored_targets(frames, target_type, frames.released(target_type, frames.cut(HOLDOUT.scored)), HOLDOUT)


def panel(frames: FeatureFrames, target_type: str, eligible: Sequence[str] | pl.Series, users: int,
          seed: int) -> pl.DataFrame:
    """(user_id, item_id, label): a positive (True) and a negative (False) for up to `users` seeded users among
    `eligible` who have a holdout target; a user every released item of the type was touched by is left out.

    The negative is the first of NEGATIVE_DRAWS seeded catalogue draws the user never touched (memory grows with
    users x draws, not users x catalogue); the few users all of whose draws were touched get one from their whole
    unconsumed catalogue."""
    catalogue = frames.released(target_type, frames.cut(HOLDOUT.scored)).cast(pl.String).unique().sort()
    targets = scored_targets(frames, target_type, catalogue, HOLDOUT)
    candidates = targets.join(pl.Series("user_id", eligible, pl.String).to_frame(), on="user_id", how="semi")
    chosen = pl.Series("user_id", sample_cohort(candidates["user_id"], users, seed), pl.String).to_frame()
    if chosen.is_empty() or catalogue.is_empty():
        return pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "label": pl.Boolean})
    touched = (frames.interactions.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
               .join(chosen, on="user_id", how="semi"))
    picks = np.random.default_rng(seed + 1).integers(0, catalogue.len(), size=(chosen.height, NEGATIVE_DRAWS))
    drawn = pl.DataFrame({"user_id": np.repeat(chosen["user_id"].to_numpy(), NEGATIVE_DRAWS),
                          "item_id": catalogue.gather(picks.ravel()), "draw": np.tile(np.arange(NEGATIVE_DRAWS),
                                                                                       chosen.height)})
    negatives = (drawn.join(touched, on=["user_id", "item_id"], how="anti").sort("user_id", "draw")
                 .group_by("user_id", maintain_order=True).first().select("user_id", "item_id"))
    unlucky = chosen.join(negatives, on="user_id", how="anti")
    if unlucky.height:
        unconsumed = (unlucky.join(catalogue.to_frame("item_id"), how="cross")
                      .join(touched, on=["user_id", "item_id"], how="anti"))
        negatives = pl.concat([negatives, _one_per_user(unconsumed, seed + 1)])
    positives = _one_per_user(targets.join(chosen, on="user_id", how="semi"), seed)
    both = positives.join(negatives.select("user_id"), on="user_id", how="semi")
    return (pl.concat([both.with_columns(label=pl.lit(True)),
                       negatives.join(both.select("user_id"), on="user_id", how="semi").with_columns(label=pl.lit(False))])
            .sort("user_id", "label", descending=[False, True]))


def subset(panel_rows: pl.DataFrame, users: int, seed: int) -> pl.DataFrame:
    """The rows of `users` seeded users of a panel: the LLM's panel drawn from the reference judge's."""
    chosen = sample_cohort(panel_rows["user_id"].unique(), users, seed)
    return panel_rows.join(pl.Series("user_id", chosen, pl.String).to_frame(), on="user_id", how="semi")


def pairwise_panel(lists: pl.DataFrame, targets: pl.DataFrame, pairs: Sequence[tuple[str, str]], users: int,
                   seed: int) -> pl.DataFrame:
    """(user_id, model_a, model_b): per pair up to `users` seeded users whose two shown lists (lists: model,
    user_id, item_id) hold different numbers of held-out items, so every judgement of them is decided."""
    hits = holdout_hits(lists, targets)
    frames = [pl.DataFrame(schema=COMPARED_SCHEMA)]
    for model_a, model_b in pairs:
        differ = (hits.filter(pl.col("model") == model_a).select("user_id", pl.col("hits").alias("a"))
                  .join(hits.filter(pl.col("model") == model_b).select("user_id", pl.col("hits").alias("b")),
                        on="user_id")
                  .filter(pl.col("a") != pl.col("b")))
        chosen = sample_cohort(differ["user_id"], users, seed)
        frames.append(pl.DataFrame({"user_id": chosen, "model_a": [model_a] * len(chosen),
                                    "model_b": [model_b] * len(chosen)}, schema=COMPARED_SCHEMA))
    return pl.concat(frames)


def requests(panel_rows: pl.DataFrame, profiles: pl.DataFrame, items: pl.DataFrame
             ) -> tuple[list[EnrichRequest], pl.DataFrame]:
    """The LLM's panel questions, user by user (a user's two share the prompt's profile prefix), and one row per
    request (entity_id, kind 'panel', user_id, item_id, label). profiles: (user_id, profile text); items: raw.items
    rows of the panel's items."""
    by_item = {row["item_id"]: row for row in items.to_dicts()}
    text = dict(profiles.select("user_id", "profile").iter_rows())
    asked, rows = [], []
    for user_id, item_id, label in panel_rows.select("user_id", "item_id", "label").iter_rows():
        if user_id not in text or item_id not in by_item:
            continue
        request = panel_request(user_id, text[user_id], by_item[item_id])
        asked.append(request)
        rows.append({"entity_id": request.entity_id, "kind": "panel", "user_id": user_id, "item_id": item_id,
                     "label": label})
    schema = {"entity_id": pl.String, "kind": pl.String, "user_id": pl.String, "item_id": pl.String,
              "label": pl.Boolean}
    return asked, pl.DataFrame(rows, schema=schema)


def _one_per_user(rows: pl.DataFrame, seed: int) -> pl.DataFrame:
    rows = rows.sort("user_id", "item_id")
    draw = np.random.default_rng(seed).random(rows.height)
    return (rows.with_columns(draw=pl.Series(draw)).sort("user_id", "draw")
            .group_by("user_id", maintain_order=True).first().select("user_id", "item_id"))


def cosine(pairs: pl.DataFrame, user_vectors: pl.DataFrame | None, item_vectors: pl.DataFrame | None) -> pl.Series:
    """sBERT-Sim of each (user_id, item_id) row: cosine of the profile's and the item's text vectors (null when
    either is missing, or before enrichment has embedded any)."""
    if user_vectors is None or item_vectors is None:
        return pl.Series("sbert_sim", [None] * pairs.height, pl.Float64)
    rows = (pairs.select("user_id", "item_id").with_row_index("row")
            .join(user_vectors.select("user_id", pl.col("embedding").alias("u")), on="user_id", how="left")
            .join(item_vectors.select("item_id", pl.col("embedding").alias("i")), on="item_id", how="left")
            .sort("row"))
    known = rows.filter(pl.col("u").is_not_null() & pl.col("i").is_not_null())
    values = np.full(rows.height, np.nan)
    if known.height:
        u = np.asarray(known["u"].to_list(), dtype=np.float64)  # (n, d)
        i = np.asarray(known["i"].to_list(), dtype=np.float64)  # (n, d)
        norms = np.linalg.norm(u, axis=1) * np.linalg.norm(i, axis=1)
        values[known["row"].to_numpy()] = (u * i).sum(axis=1) / np.where(norms > 0, norms, 1.0)
    return pl.Series("sbert_sim", values).fill_nan(None)


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive outscores a negative), ties counting half (Mann-Whitney U / (n_pos n_neg))."""
    return float(_auc(np.asarray(positive, float)[None, :], np.asarray(negative, float)[None, :])[0])


def _auc(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Row-wise AUC of (B, P) positives against (B, N) negatives."""
    n_pos, n_neg = positive.shape[1], negative.shape[1]
    ranks = rankdata(np.concatenate([positive, negative], axis=1), axis=1)  # average ranks for ties
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auc_interval(positive: np.ndarray, negative: np.ndarray, seed: int, resamples: int = RESAMPLES,
                 level: float = LEVEL) -> Interval | None:
    """AUC of users' (positive, negative) score pairs (aligned by user) and a percentile interval from
    resampling users with replacement; None without pairs."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if positive.size == 0:
        return None
    picks = np.random.default_rng(seed).integers(0, positive.size, size=(resamples, positive.size))
    spread = _auc(positive[picks], negative[picks])
    tail = (1 - level) / 2 * 100
    return Interval(roc_auc(positive, negative), *(float(x) for x in np.percentile(spread, [tail, 100 - tail])))


def share_interval(hits: np.ndarray, counts: np.ndarray, seed: int, resamples: int = RESAMPLES,
                   level: float = LEVEL) -> Interval | None:
    """sum(hits) / sum(counts) over users (one entry each) and a percentile interval from resampling users;
    None when nothing was counted."""
    hits, counts = np.asarray(hits, float), np.asarray(counts, float)
    if counts.sum() == 0:
        return None
    picks = np.random.default_rng(seed).integers(0, counts.size, size=(resamples, counts.size))
    totals = counts[picks].sum(axis=1)
    spread = hits[picks].sum(axis=1)[totals > 0] / totals[totals > 0]
    tail = (1 - level) / 2 * 100
    return Interval(float(hits.sum() / counts.sum()), *(float(x) for x in np.percentile(spread, [tail, 100 - tail])))


def llm_scores(panel_rows: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """The LLM's panel scores and what they are: P(aligned) when every answer has one, else the verdict (1 or 0)
    for all, so one scale is ranked (an endpoint that returns no log-probabilities still validates)."""
    answered = panel_rows.filter(pl.col("verdict").is_not_null())
    if answered.height and answered["p_aligned"].null_count() == 0:
        return panel_rows.with_columns(score=pl.col("p_aligned")), "p_aligned"
    return panel_rows.with_columns(score=(pl.col("verdict") == "aligned").cast(pl.Float64)), "verdict"


def panel_row(judge: str, scored_by: str, scored: pl.DataFrame, users: int, seed: int,
              metric: str = "auc") -> dict[str, object]:
    """The validation row of one judge from panel rows (user_id, label, score); users with both scores count."""
    pairs = (scored.filter(pl.col("score").is_not_null())
             .group_by("user_id").agg(pos=pl.col("score").filter(pl.col("label")).first(),
                                      neg=pl.col("score").filter(~pl.col("label")).first())
             .drop_nulls().sort("user_id"))
    found = auc_interval(pairs["pos"].to_numpy(), pairs["neg"].to_numpy(), seed)
    return _row(judge, metric, None, None, scored_by, found, pairs.height, users)


def holdout_hits(lists: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """(user_id, model, hits): held-out targets among each shown list (lists: model, user_id, item_id)."""
    return (lists.select("model", "user_id", "item_id")
            .join(targets.select("user_id", "item_id").with_columns(hit=pl.lit(1)), on=["user_id", "item_id"],
                  how="left")
            .group_by("user_id", "model").agg(hits=pl.col("hit").fill_null(0).sum()))


def agreement_rows(judge: str, scored_by: str, judgements: pl.DataFrame, hits: pl.DataFrame,
                   seed: int) -> list[dict[str, object]]:
    """One validation row per (model_a, model_b) from judgements (user_id, model_a, model_b, winner: a model,
    'tie' or null while unanswered) and holdout hits per (user_id, model); `users` counts users with an answer."""
    rows = []
    marked = (judgements
              .join(hits.rename({"model": "model_a", "hits": "hits_a"}), on=["user_id", "model_a"], how="left")
              .join(hits.rename({"model": "model_b", "hits": "hits_b"}), on=["user_id", "model_b"], how="left")
              .with_columns(pl.col("hits_a", "hits_b").fill_null(0))
              .with_columns(decided=((pl.col("winner") == pl.col("model_a")) | (pl.col("winner") == pl.col("model_b")))
                            .fill_null(False) & (pl.col("hits_a") != pl.col("hits_b")),
                            better=pl.when(pl.col("hits_a") > pl.col("hits_b")).then(pl.col("model_a"))
                            .otherwise(pl.col("model_b"))))
    for (model_a, model_b), pair in marked.group_by("model_a", "model_b", maintain_order=True):
        per_user = (pair.filter(pl.col("winner").is_not_null())  # users with an answer: pending ones are not judged
                    .group_by("user_id").agg(agree=(pl.col("decided") & (pl.col("winner") == pl.col("better"))).sum(),
                                             decided=pl.col("decided").sum()).sort("user_id"))
        found = share_interval(per_user["agree"].to_numpy(), per_user["decided"].to_numpy(), seed)
        rows.append(_row(judge, "agreement", model_a, model_b, scored_by, found,
                         int(per_user["decided"].sum()), per_user.height))
    return rows


def list_winners(lists: pl.DataFrame, scores: pl.DataFrame, pairs: Sequence[tuple[str, str]]) -> pl.DataFrame:
    """sBERT-Sim as a pairwise judge: per user and pair, the model whose shown list has the higher mean score
    (scores: user_id, item_id, score); 'tie' when equal, null when a list has no score. One judgement each."""
    means = (lists.join(scores, on=["user_id", "item_id"], how="left")
             .group_by("user_id", "model").agg(mean=pl.col("score").mean()))
    frames = []
    for model_a, model_b in pairs:
        a = means.filter(pl.col("model") == model_a).select("user_id", pl.col("mean").alias("a"))
        b = means.filter(pl.col("model") == model_b).select("user_id", pl.col("mean").alias("b"))
        frames.append(a.join(b, on="user_id").with_columns(
            model_a=pl.lit(model_a), model_b=pl.lit(model_b),
            winner=pl.when(pl.col("a").is_null() | pl.col("b").is_null()).then(pl.lit(None, dtype=pl.String))
            .when(pl.col("a") > pl.col("b")).then(pl.lit(model_a))
            .when(pl.col("a") < pl.col("b")).then(pl.lit(model_b)).otherwise(pl.lit("tie"))))
    schema = {"user_id": pl.String, "model_a": pl.String, "model_b": pl.String, "winner": pl.String}
    return (pl.concat([f.select(list(schema)) for f in frames]) if frames
            else pl.DataFrame(schema=schema)).sort("user_id")


def validation(panel_rows: pl.DataFrame, pairwise: pl.DataFrame, lists: pl.DataFrame, targets: pl.DataFrame | None,
               pairs: Sequence[tuple[str, str]], user_vectors: pl.DataFrame | None,
               item_vectors: pl.DataFrame | None, panel_users: int, seed: int,
               reference: pl.DataFrame | None = None) -> pl.DataFrame:
    """eval.judge_validation's rows: both judges' panel AUC ('auc', the same users), sBERT-Sim's on the reference
    panel ('auc_reference', a superset the LLM's panel is drawn from); with the holdout known, both judges'
    agreement per pair.

    panel_rows: (user_id, item_id, label, verdict, p_aligned, sbert_sim); pairwise: the LLM's orders, of the
    cohort and of the pairwise panel (user_id, model_a, model_b, order, verdict; one judgement per user, pair and
    order counts); lists: the shown lists (model, user_id, item_id) of the users judged pairwise, whom sBERT-Sim
    judges on every pair; reference: (user_id, item_id, label)."""
    llm, scored_by = llm_scores(panel_rows)
    rows = [panel_row("llm", scored_by, llm, panel_users, seed),
            panel_row("sbert_sim", "cosine", panel_rows.with_columns(score=pl.col("sbert_sim")), panel_users, seed)]
    if reference is not None:
        scored = reference.with_columns(score=cosine(reference, user_vectors, item_vectors))
        rows.append(panel_row("sbert_sim", "cosine", scored, reference["user_id"].n_unique(), seed,
                              metric="auc_reference"))
    if targets is not None and pairs:
        hits = holdout_hits(lists, targets)
        once = (pairwise.sort("verdict", nulls_last=True)
                .unique(["user_id", "model_a", "model_b", "order"], keep="first", maintain_order=True))
        winners = order_winners(once).select("user_id", "model_a", "model_b", "winner")
        rows += agreement_rows("llm", "each_order", winners, hits, seed)
        shown = lists.select("user_id", "item_id").unique()
        scores = shown.with_columns(score=cosine(shown, user_vectors, item_vectors))
        rows += agreement_rows("sbert_sim", "mean_cosine", list_winners(lists, scores, pairs), hits, seed)
    return pl.DataFrame(rows, schema=VALIDATION_SCHEMA)


def verdicts(validation_rows: pl.DataFrame) -> dict[str, str]:
    """Metadata a person reads first: each judge's panel AUC and interval with its verdict, sBERT-Sim's on the
    reference panel, and the better judge on the shared panel."""
    out = {}
    for row in validation_rows.filter(pl.col("metric").is_in(["auc", "auc_reference"])).to_dicts():
        key = f"{row['judge']}_auc" + ("_reference_panel" if row["metric"] == "auc_reference" else "")
        if row["value"] is None:
            out[key] = f"not measured (0 of {row['users']} panel users scored)"
            continue
        verdict = "informative" if row["informative"] else "judge uninformative"
        out[key] = (f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] on {row['pairs']} pairs "
                    f"({row['scored_by']}): {verdict}")
    out["better_judge"] = better_judge(validation_rows.filter(pl.col("metric") == "auc").to_dicts())
    return out


def better_judge(rows: Sequence[dict[str, object]]) -> str:
    """Which judge validates better on the panel, in words, from panel rows (metric 'auc')."""
    measured = sorted((r for r in rows if r["metric"] == "auc" and r["value"] is not None),
                      key=lambda r: -float(r["value"]))  # type: ignore[arg-type]
    if len(measured) < 2:
        return "only one judge measured" if measured else "no judge measured"
    best, other = measured[0], measured[1]
    words = f"{best['judge']} (AUC {best['value']:.3f} vs {other['judge']} {other['value']:.3f})"
    if float(best["ci_low"]) > float(other["ci_high"]):  # type: ignore[arg-type]
        return words + ", intervals apart"
    return words + ", intervals overlap"


def _row(judge: str, metric: str, model_a: str | None, model_b: str | None, scored_by: str, found: Interval | None,
         pairs: int, users: int) -> dict[str, object]:
    value, low, high = found if found is not None else (None, None, None)
    informative = None if found is None else bool(pairs >= MIN_PAIRS and not low <= 0.5 <= high)
    return {"judge": judge, "metric": metric, "model_a": model_a, "model_b": model_b, "scored_by": scored_by,
            "value": value, "ci_low": low, "ci_high": high, "pairs": pairs, "users": users,
            "informative": informative}
