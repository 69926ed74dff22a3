"""Explainer: each candidate row names the user's history item whose text is nearest, whatever the row order."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from models import candidates
from models.candidates import Explainer

PICKED = "picked from your listening profile"


@pytest.fixture
def explainer() -> Explainer:
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(40, 8), dim=1)
    ids = pl.Series([f"i{n}" for n in range(40)])
    rng = np.random.default_rng(0)
    history = pl.DataFrame(
        [(f"u{u}", f"i{item}", "listened to" if h % 2 else "showed interest in", h)
         for u in range(6) for h, item in enumerate(rng.choice(40, size=u + 1, replace=False))],  # u6, u7: none
        schema=["user_id", "item_id", "verb", "h"], orient="row")
    titles = pl.DataFrame({"item_id": [f"i{n}" for n in range(40)], "title": [None if n == 3 else f"T{n}" for n in range(40)]})
    return Explainer(history, titles, ids, text)


def brute_force(explainer: Explainer, user: str, item: str) -> str:
    """The sentence of the history item with the largest cosine (the first such on ties), by loops."""
    rows = explainer.history.filter(pl.col("user_id") == user).sort("h").rows(named=True)
    if not rows:
        return PICKED
    where = {name: n for n, name in enumerate(explainer.text_ids.to_list())}
    candidate = explainer.text[where[item]] if item in where else torch.zeros(explainer.text.shape[1])
    scores = [float(candidate @ explainer.text[where[row["item_id"]]]) for row in rows]
    best = rows[int(np.argmax(scores))]
    title = explainer.titles.filter(pl.col("item_id") == best["item_id"])["title"].item()
    return PICKED if title is None else f"because you {best['verb']} {title}"


@pytest.mark.parametrize("floats", [1 << 24, 3 * 5 * 8])  # every user at once; 3 users a slice
def test_each_row_names_the_nearest_history_item_in_any_row_order(explainer: Explainer, floats: int,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(candidates, "EXPLAIN_FLOATS", floats)
    rng = np.random.default_rng(1)
    # five candidates a user, one of them ("x1") without a text vector
    frame = pl.DataFrame(
        [(f"u{u}", "x1" if r == 2 else f"i{item}", r + 1, float(-r))
         for u in range(8) for r, item in enumerate(rng.choice(40, size=5, replace=False))],
        schema={"user_id": pl.String, "item_id": pl.String, "rank": pl.Int32, "score": pl.Float32}, orient="row")
    for rows in (frame, frame.sample(fraction=1.0, shuffle=True, seed=2)):
        explained = explainer.explain(rows, "v1", "two_tower_hgnn")
        assert explained.select("user_id", "item_id", "rank").equals(rows.select("user_id", "item_id", "rank"))
        expected = [brute_force(explainer, user, item) for user, item in rows.select("user_id", "item_id").rows()]
        assert explained["explanation"].to_list() == expected
        assert set(explained["model"]) == {"two_tower_hgnn"} and not explained["is_fallback"].any()
    assert PICKED in expected and any(text.startswith("because you listened to") for text in expected)
