"""eval.judge_scores and eval.judge_validation on hand-made lists with a scripted judge: both orders, holdout
agreement, the validation panel (P(aligned) and sBERT-Sim AUCs, pairwise agreement), budget, cache and gates."""
import contextlib
import datetime as dt
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from assets.eval import eval_judge_scores
from models.llm import ChatModel, Completion
from models.logprobs import TokenLogprob
from assets.resources import Crossfade, LLMBackend, Warehouse
from quality import check
from quality.thresholds import Thresholds
from warehouse.store import Store

AS_OF = dt.date(2026, 11, 2)
ITEMS = {"a1": "Deep Space Voyages", "a2": "Crime Weekly", "a3": "Space Station Diaries", "a4": "Baking Basics"}
# u1: the judge always answers A (position bias); u2: it prefers the list holding a space title.
LISTS = {("two_tower_hgnn", "u1"): ["a1", "a3"], ("popularity", "u1"): ["a2", "a4"],
         ("two_tower_hgnn", "u2"): ["a3", "a1"], ("popularity", "u2"): ["a4", "a2"]}
HOLDOUT = [("u1", "a1"), ("u2", "a2")]
# MiniLM stand-ins: u1 and the space titles point one way, u2 and the crime title the other.
VECTORS = {("user", "u1"): [1.0, 0.0], ("user", "u2"): [0.0, 1.0], ("item", "a1"): [1.0, 0.0],
           ("item", "a2"): [0.0, 1.0], ("item", "a3"): [1.0, 0.1], ("item", "a4"): [0.5, 0.5]}
P_SPACE, P_OTHER = 0.8, 0.2  # the scripted judge's P(aligned) for an item with and without a space title


class ScriptedJudge:
    name = "scripted"
    max_concurrency = 1

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any], *, max_tokens: int,
                 temperature: float, seed: int, top_logprobs: int = 0) -> Completion:
        self.calls += 1
        prompt = messages[1]["content"]
        if "List A:" in prompt:
            list_a = prompt.split("List A:")[1].split("List B:")[0]
            verdict = "A" if "top topics: space" in prompt or "Space" in list_a else "B"
            answer = {"verdict": verdict, "confidence": "medium", "rationale": "compared"}
            return Completion(json.dumps(answer), 10, 10, 0.0, "stop")
        aligned = "Space" in prompt.split("Candidate item:")[1]
        answer = {"aligned": aligned} if "confidence" not in schema["properties"] else {
            "aligned": aligned, "confidence": "high", "rationale": "checked"}
        text = json.dumps(answer)
        value = "true" if aligned else "false"
        p_true = P_SPACE if aligned else P_OTHER
        head, tail = text.split(value, 1)
        tokens = (TokenLogprob(head, 0.0, ()),
                  TokenLogprob(value, math.log(p_true if aligned else 1 - p_true),
                               (("true", math.log(p_true)), ("false", math.log(1 - p_true)))),
                  TokenLogprob(tail, 0.0, ())) if top_logprobs else ()
        return Completion(text, 10, 10, 0.0, "stop", tokens)


SCRIPTED = ScriptedJudge()


class ScriptedBackend(LLMBackend):
    @contextlib.contextmanager
    def chat_model(self) -> Iterator[ChatModel]:
        yield SCRIPTED


@pytest.fixture
def judged_home(tmp_path: Path) -> tuple[Path, Store]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "crossfade.yaml").write_text("llm_call_budget: 6\njudge_users: 2\n")
    store = Store(home / "warehouse" / "crossfade.duckdb")
    items = pl.DataFrame({"item_id": list(ITEMS), "item_type": "audiobook", "title": list(ITEMS.values()),
                          "description": "a book", "genres": [["fiction"]] * len(ITEMS), "source_file": "x"})
    vectors = pl.DataFrame([{"entity": entity, "entity_id": entity_id, "model": "minilm", "embedding": vector}
                            for (entity, entity_id), vector in VECTORS.items()])
    lists = pl.DataFrame([{"model": m, "user_id": u, "item_id": i, "rank": r, "score": 1.0 / r, "as_of": AS_OF}
                          for (m, u), ids in LISTS.items() for r, i in enumerate(ids, 1)])
    facts = {"u1": {"type_shares": {"podcast": 1.0}, "top_topics": ["space"], "top_items": []},
             "u2": {"type_shares": {"podcast": 1.0}, "top_topics": ["crime"], "top_items": []}}
    profiles = pl.DataFrame({"user_id": list(facts), "status": "pending", "narrative_json": [None, None],
                             "profile_json": [None, None], "facts_json": [json.dumps(f) for f in facts.values()]},
                            schema_overrides={"narrative_json": pl.String, "profile_json": pl.String})
    holdout = pl.DataFrame(HOLDOUT, schema=["user_id", "item_id"], orient="row")
    with store.write() as con:
        for name, frame in (("items", items), ("lists", lists), ("profiles", profiles), ("holdout", holdout),
                            ("vectors", vectors)):
            con.register(name, frame.to_arrow())
        con.execute("insert into raw.items by name select * from items")
        con.execute("create table eval.offline_lists as select * from lists")
        con.execute("create table enrich.user_profiles as select * from profiles")
        con.execute("create table features.splits as select * from (values "
                    "('train', $d::timestamp - interval 104 day, $d::timestamp - interval 14 day), "
                    "('holdout', $d::timestamp - interval 14 day, $d::timestamp)) as s(split, start_at, end_at)",
                    {"d": AS_OF})
        con.execute("create table features.interactions as select 'holdout' as period, user_id, item_id, "
                    "'audiobook' as item_type from holdout")
        con.execute("create table features.user_stats as select distinct user_id from holdout")
        con.execute("create table features.item_stats as select item_id from items")
        con.execute("create table enrich.text_embeddings as select * from vectors")
    return home, store


def judge_run(home: Path, store: Store) -> dg.ExecuteInProcessResult:
    return dg.materialize([eval_judge_scores], resources={
        "crossfade": Crossfade(home=str(home)), "warehouse": Warehouse(database=str(store.database)),
        "llm": ScriptedBackend(home=str(home))})


def test_judge_counts_wins_only_across_both_orders_and_resumes_within_budget(judged_home: tuple[Path, Store]) -> None:
    home, store = judged_home
    (home / "crossfade.yaml").write_text("llm_call_budget: 6\njudge_users: 2\njudge_pairwise_panel_users: 0\n")
    SCRIPTED.calls = 0
    first = judge_run(home, store)
    assert first.success and SCRIPTED.calls == 4 + 6  # the whole panel (2 users x 2 items), then the budget of 6
    with store.audit() as con:
        statuses = con.sql("select kind, status, count(*) from eval.judge_scores group by all order by all").fetchall()
    # u2's two pointwise judgements wait for the next run
    assert statuses == [("pairwise", "ok", 4), ("panel", "ok", 4), ("pointwise", "ok", 2), ("pointwise", "pending", 2)]

    second = judge_run(home, store)
    assert second.success and SCRIPTED.calls == 12  # only the two pending inputs reached the model
    with store.audit() as con:
        rows = con.sql("select * from eval.judge_scores where kind <> 'panel'").pl()
    assert (rows["status"] == "ok").all()
    finals = rows.filter(pl.col("kind") == "pairwise").group_by("user_id").agg(pl.col("final_winner").first())
    assert dict(finals.iter_rows()) == {"u1": "tie", "u2": "two_tower_hgnn"}
    point = rows.filter(pl.col("kind") == "pointwise").sort("user_id", "item_id")
    assert point.select("user_id", "item_id", "verdict", "in_holdout").rows() == [
        ("u1", "a1", "aligned", True), ("u1", "a3", "aligned", False),
        ("u2", "a1", "aligned", False), ("u2", "a3", "aligned", False)]
    metadata = second.asset_materializations_for_node("eval__judge_scores")[0].metadata
    assert metadata["positive_rate"].value == 1.0 and metadata["tie_rate"].value == 0.5
    assert metadata["holdout_agreement"].value == 0.25


def test_the_panel_pairs_holdout_positives_with_unconsumed_negatives_and_validates_both_judges(
        judged_home: tuple[Path, Store]) -> None:
    home, store = judged_home
    result = judge_run(home, store)
    assert result.success
    with store.audit() as con:
        panel = con.sql("select user_id, item_id, in_holdout, verdict, p_aligned, sbert_sim "
                        "from eval.judge_scores where kind = 'panel' order by user_id, in_holdout desc").pl()
        validation = con.sql("select * from eval.judge_validation").pl()
    assert panel.filter(pl.col("in_holdout")).select("user_id", "item_id").rows() == HOLDOUT
    negatives = dict(panel.filter(~pl.col("in_holdout")).select("user_id", "item_id").iter_rows())
    assert negatives["u1"] != "a1" and negatives["u2"] != "a2"  # never an item the user touched
    expected_p = [P_SPACE if "Space" in ITEMS[item] else P_OTHER for item in panel["item_id"]]
    assert panel["p_aligned"].to_list() == pytest.approx(expected_p)
    assert panel["verdict"].to_list() == ["aligned" if p == P_SPACE else "not_aligned" for p in expected_p]
    # u1's positive a1 is a space title (0.8); u2's positive a2 is not (0.2): count the (positive, negative) wins
    pos = {"u1": P_SPACE, "u2": P_OTHER}
    neg = {user: P_SPACE if "Space" in ITEMS[item] else P_OTHER for user, item in negatives.items()}
    wins = sum((p > n) + 0.5 * (p == n) for p in pos.values() for n in neg.values())
    auc = validation.filter(pl.col("metric") == "auc").sort("judge")
    assert auc.select("judge", "scored_by", "pairs", "users").rows() == [("llm", "p_aligned", 2, 2),
                                                                         ("sbert_sim", "cosine", 2, 2)]
    assert auc["value"][0] == pytest.approx(wins / 4)
    assert auc["value"][1] == 1.0  # each positive is its user's own direction, every negative is further away
    assert auc["informative"].to_list() == [False, False]  # 2 pairs are too few to call either informative
    agreement = validation.filter(pl.col("metric") == "agreement").sort("judge")
    # u1: holdout hit in 2T's list; u2: in Popularity's. The LLM picks 2T in 3 of 4 orders (right once); sBERT-Sim
    # picks each user's nearer list, the one with the hit
    assert agreement.select("judge", "model_a", "model_b", "value", "pairs", "users").rows() == [
        ("llm", "two_tower_hgnn", "popularity", 0.25, 4, 2), ("sbert_sim", "two_tower_hgnn", "popularity", 1.0, 2, 2)]
    reference = validation.filter(pl.col("metric") == "auc_reference")  # the same two users: the whole world
    assert reference.select("judge", "value", "pairs", "users").rows() == [("sbert_sim", 1.0, 2, 2)]
    metadata = result.asset_materializations_for_node("eval__judge_scores")[0].metadata
    assert metadata["sbert_sim_auc"].value == "1.000 [1.000, 1.000] on 2 pairs (cosine): judge uninformative"
    assert metadata["sbert_sim_auc_reference_panel"].value.startswith("1.000 [1.000, 1.000] on 2 pairs")
    assert metadata["better_judge"].value.startswith("sbert_sim (AUC 1.000 vs llm")
    with store.audit() as con:
        for table in ("eval.judge_scores", "eval.judge_validation"):
            report = check(con, table, Thresholds())
            assert report.success, report.failed


def test_the_pairwise_panel_is_judged_in_full_on_users_whose_lists_differ_in_held_out_items(
        judged_home: tuple[Path, Store]) -> None:
    home, store = judged_home
    (home / "crossfade.yaml").write_text("llm_call_budget: 1\njudge_users: 2\njudge_pairwise_panel_users: 5\n")
    SCRIPTED.calls = 0
    result = judge_run(home, store)
    # the pointwise panel (4) and the pairwise panel (2 users x 2 orders) in full, then one cohort call: the
    # cohort's pairwise prompts are the panel's, answered from its cache
    assert result.success and SCRIPTED.calls == 4 + 4 + 1
    with store.audit() as con:
        compared = con.sql("select user_id, model_a, model_b, \"order\", status, winner from eval.judge_scores "
                           "where kind = 'panel_pairwise' order by user_id, \"order\"").fetchall()
        agreement = con.sql("select value, pairs, users from eval.judge_validation "
                            "where judge = 'llm' and metric = 'agreement'").fetchall()
        cohort = con.sql("select status, count(*) from eval.judge_scores where kind = 'pairwise' "
                         "group by all").fetchall()
    # both users' lists differ in held-out items (u1's hit is in 2T's list, u2's in Popularity's)
    assert compared == [("u1", "two_tower_hgnn", "popularity", "ab", "ok", "two_tower_hgnn"),
                        ("u1", "two_tower_hgnn", "popularity", "ba", "ok", "popularity"),
                        ("u2", "two_tower_hgnn", "popularity", "ab", "ok", "two_tower_hgnn"),
                        ("u2", "two_tower_hgnn", "popularity", "ba", "ok", "two_tower_hgnn")]
    assert cohort == [("ok", 4)]
    # four decided judgements, one naming the list with the hit; the cohort's same judgements are not counted twice
    assert agreement == [(0.25, 4, 2)]

    (home / "crossfade.yaml").write_text("llm_call_budget: 1\njudge_users: 2\njudge_pairwise_panel_users: 1\n")
    assert judge_run(home, store).success
    with store.audit() as con:
        users = con.sql("select count(distinct user_id) from eval.judge_scores "
                        "where kind = 'panel_pairwise'").fetchone()
    assert users == (1,)


VALIDATION_FAULTS = {
    "value": "update eval.judge_validation set value = 1.2, ci_high = 1.3 where judge = 'sbert_sim' and metric = 'auc'",
    "value_inside_interval": "update eval.judge_validation set ci_low = value + 0.01 where judge = 'llm' "
                             "and metric = 'auc'",
    "value_matches_pairs": "update eval.judge_validation set value = null, ci_low = null, ci_high = null "
                           "where judge = 'llm' and metric = 'auc'",
    "informative_matches_interval": "update eval.judge_validation set informative = true where judge = 'llm' "
                                    "and metric = 'auc'",
    "reference_scored_panel": "update eval.judge_validation set pairs = 0, value = null, ci_low = null, "
                              "ci_high = null, informative = null where judge = 'sbert_sim' and metric = 'auc'",
    "one_pair_per_panel_user": "update eval.judge_validation set pairs = 3 where judge = 'llm' and metric = 'auc'",
    "row_key": "insert into eval.judge_validation select * from eval.judge_validation where metric = 'auc'",
    "judge": "update eval.judge_validation set judge = 'gpt' where judge = 'llm' and metric = 'auc'",
}
SCORES_FAULTS = {
    "kind": "update eval.judge_scores set kind = 'listwise' where kind = 'panel'",
    "p_aligned": "update eval.judge_scores set p_aligned = 1.5 where kind = 'panel'",
    "p_aligned_only_pointwise": "update eval.judge_scores set p_aligned = 0.5 where kind = 'pairwise'",
    "request_key": "insert into eval.judge_scores select * from eval.judge_scores where kind = 'panel'",
}


@pytest.mark.parametrize(("table", "column", "fault"),
                         [("eval.judge_validation", column, sql) for column, sql in VALIDATION_FAULTS.items()]
                         + [("eval.judge_scores", column, sql) for column, sql in SCORES_FAULTS.items()])
def test_each_planted_fault_fails_its_gate(judged_home: tuple[Path, Store], table: str, column: str,
                                           fault: str) -> None:
    home, store = judged_home
    assert judge_run(home, store).success
    with store.write() as con:
        con.execute(fault)
    with store.audit() as con:
        report = check(con, table, Thresholds())
    assert not report.success
    assert column in {failure["column"] for failure in report.failed}, report.failed
