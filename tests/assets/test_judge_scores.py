"""eval.judge_scores on hand-made lists with a scripted judge: both orders, holdout agreement, budget and cache."""
import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from assets.eval import eval_judge_scores
from models.llm import ChatModel, Completion
from assets.resources import Crossfade, LLMBackend, Warehouse
from warehouse.store import Store

AS_OF = dt.date(2026, 11, 2)
ITEMS = {"a1": "Deep Space Voyages", "a2": "Crime Weekly", "a3": "Space Station Diaries", "a4": "Baking Basics"}
# u1: the judge always answers A (position bias); u2: it prefers the list holding a space title.
LISTS = {("two_tower_hgnn", "u1"): ["a1", "a3"], ("popularity", "u1"): ["a2", "a4"],
         ("two_tower_hgnn", "u2"): ["a3", "a1"], ("popularity", "u2"): ["a4", "a2"]}
HOLDOUT = [("u1", "a1"), ("u2", "a2")]


class ScriptedJudge:
    name = "scripted"
    max_concurrency = 1

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any], *, max_tokens: int,
                 temperature: float, seed: int) -> Completion:
        self.calls += 1
        prompt = messages[1]["content"]
        if "List A:" in prompt:
            list_a = prompt.split("List A:")[1].split("List B:")[0]
            verdict = "A" if "top topics: space" in prompt or "Space" in list_a else "B"
            answer = {"rationale": "compared", "verdict": verdict, "confidence": "medium"}
        else:
            answer = {"rationale": "checked", "aligned": "Space" in prompt.split("Candidate item:")[1],
                      "confidence": "high"}
        return Completion(json.dumps(answer), 10, 10, 0.0, "stop")


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
    lists = pl.DataFrame([{"model": m, "user_id": u, "item_id": i, "rank": r, "score": 1.0 / r, "as_of": AS_OF}
                          for (m, u), ids in LISTS.items() for r, i in enumerate(ids, 1)])
    facts = {"u1": {"type_shares": {"podcast": 1.0}, "top_topics": ["space"], "top_items": []},
             "u2": {"type_shares": {"podcast": 1.0}, "top_topics": ["crime"], "top_items": []}}
    profiles = pl.DataFrame({"user_id": list(facts), "status": "pending", "narrative_json": [None, None],
                             "profile_json": [None, None], "facts_json": [json.dumps(f) for f in facts.values()]},
                            schema_overrides={"narrative_json": pl.String, "profile_json": pl.String})
    holdout = pl.DataFrame(HOLDOUT, schema=["user_id", "item_id"], orient="row")
    with store.write() as con:
        for name, frame in (("items", items), ("lists", lists), ("profiles", profiles), ("holdout", holdout)):
            con.register(name, frame.to_arrow())
        con.execute("insert into raw.items by name select * from items")
        con.execute("create table eval.offline_lists as select * from lists")
        con.execute("create table enrich.user_profiles as select * from profiles")
        con.execute("create table features.splits as select 'holdout' as split, "
                    "$d::timestamp - interval 14 day as start_at, $d::timestamp as end_at", {"d": AS_OF})
        con.execute("create table features.interactions as select 'holdout' as period, user_id, item_id, "
                    "'audiobook' as item_type from holdout")
    return home, store


def judge_run(home: Path, store: Store) -> dg.ExecuteInProcessResult:
    return dg.materialize([eval_judge_scores], resources={
        "crossfade": Crossfade(home=str(home)), "warehouse": Warehouse(database=str(store.database)),
        "llm": ScriptedBackend(home=str(home))})


def test_judge_counts_wins_only_across_both_orders_and_resumes_within_budget(judged_home: tuple[Path, Store]) -> None:
    home, store = judged_home
    SCRIPTED.calls = 0
    first = judge_run(home, store)
    assert first.success and SCRIPTED.calls == 6
    with store.read() as con:
        statuses = con.sql("select status, count(*) from eval.judge_scores group by 1 order by 1").fetchall()
    assert statuses == [("ok", 6), ("pending", 2)]  # u2's two pointwise judgements wait for the next run

    second = judge_run(home, store)
    assert second.success and SCRIPTED.calls == 8  # only the two pending inputs reached the model
    with store.read() as con:
        rows = con.sql("select * from eval.judge_scores").pl()
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
