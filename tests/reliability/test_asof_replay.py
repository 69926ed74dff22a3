"""As-of replay: candidates for date D use no event at or after D, even when the warehouse already holds them."""
import datetime as dt
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from models.recommender import FeatureFrames
from warehouse import readers
from models import two_tower
from models.bundle import ModelBundle
from models.text_features import hashed_text_embeddings
from tests.assets.test_serving import SMALL, materialise
from tests.conftest import ITEM_TYPES, IngestedWorld
from warehouse import ingest, landing, registry
from warehouse.features import FEATURE_TABLES, FeatureParams, build_table
from warehouse.store import Store

pytestmark = pytest.mark.slow  # two worlds ingested, featurised, trained and served: about 50 s

AS_OF = dt.date(2026, 10, 25)  # inside the sample world (2026-10-03 .. 2026-11-01)
PLANTED_USER = "planted-newcomer"  # exists only through planted events


def plant(root: Path, user_id: str, item_id: str) -> None:
    """Events at and after AS_OF, landed on their own day or later (late), for a known and a new user."""
    def event(n: int, user: str, ts: dt.datetime) -> dict:
        return {"event_id": f"planted-{n}", "user_id": user, "item_id": item_id, "ts": ts.isoformat() + "Z",
                "event_type": "play", "ms_played": 600_000, "context": "home", "country": "SE"}

    midnight = dt.datetime.combine(AS_OF, dt.time())
    days = {AS_OF: [event(1, user_id, midnight), event(2, PLANTED_USER, midnight + dt.timedelta(hours=23))],
            AS_OF + dt.timedelta(days=1): [event(3, user_id, midnight + dt.timedelta(hours=12))],  # late, for D
            AS_OF + dt.timedelta(days=3): [event(4, user_id, midnight + dt.timedelta(days=3))]}
    for day, rows in days.items():
        folder = root / "events" / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "planted.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")


def replay(home: Path) -> Store:
    """Ingest every landed partition (the warehouse may hold later days), build features for AS_OF, train a
    small model on them, promote it, and run the serving chain for the partition of AS_OF."""
    store = Store(home / "warehouse" / "crossfade.duckdb")
    with store.write() as con:
        ingest.ingest_items(con, home / "landing", ITEM_TYPES)
        ingest.ingest_users(con, home / "landing")
        for key in landing.event_partitions(home / "landing"):
            ingest.ingest_events(con, home / "landing", key)
        for name in FEATURE_TABLES:
            build_table(con, name, FeatureParams(as_of=AS_OF, holdout_days=7, valid_days=7))  # train from 10-03
    with store.read() as con:
        frames = FeatureFrames(**readers.feature_tables(con))
    model = two_tower.fit(frames, SMALL, text_embeddings=hashed_text_embeddings(frames.items))
    empty = pl.DataFrame(schema={"item_id": pl.String, "item_type": pl.String, "embedding": pl.List(pl.Float32)})
    folder = ModelBundle(model, empty, {"model_version": "replay"}).save(home / "models" / "replay")
    with store.write() as con:
        registry.register(con, {"model_version": "replay", "model_name": "two_tower_hgnn", "as_of": AS_OF,
                                "config": {}, "metrics": {}, "checkpoint_dir": str(folder)})
        registry.promote(con, "replay")
    partition = (AS_OF - dt.timedelta(days=1)).isoformat()
    result = materialise(home, store, partition)
    assert result.success, "the serving chain failed on the replayed world"
    return store


def tables(store: Store) -> dict[str, pl.DataFrame]:
    with store.read() as con:
        out = {name: con.sql(f"select * from features.{name}").pl() for name in FEATURE_TABLES}
        out["candidates"] = con.sql("select * from serving.candidates").pl()
    return {name: frame.sort(frame.columns) for name, frame in out.items()}


@pytest.fixture(scope="module")
def worlds(ingested_world: IngestedWorld, tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Store, str, str]:
    """(clean, planted) replays of the same world and the known user and item the planted events tie."""
    with ingested_world.store.read() as con:
        user_id, item_id = con.execute(
            "select u.user_id, i.item_id from (select distinct user_id from raw.events order by user_id limit 1) as u, "
            "raw.items as i where i.item_type = 'audiobook' and (i.release_date is null or i.release_date < $d) "
            "and not exists (select 1 from raw.events as e where e.user_id = u.user_id and e.item_id = i.item_id) "
            "order by i.item_id limit 1", {"d": AS_OF}).fetchone()
    stores = []
    for name in ("clean", "planted"):
        home = tmp_path_factory.mktemp(name)
        shutil.copytree(ingested_world.landing, home / "landing")
        if name == "planted":
            plant(home / "landing", user_id, item_id)
        stores.append(replay(home))
    return stores[0], stores[1], user_id, item_id


def test_planted_events_are_ingested_but_reach_no_table_used(worlds: tuple[Store, Store, str, str]) -> None:
    _, planted, user_id, item_id = worlds
    with planted.read() as con:
        assert con.execute("select count(*) from raw.events where event_id like 'planted-%'").fetchone()[0] == 4
        interactions = con.sql("select * from features.interactions").pl()
        stats = con.sql("select * from features.user_stats").pl()
        splits = con.sql("select * from features.splits").pl()
        lists = con.sql("select * from serving.candidates").pl()
    assert splits["end_at"].max() == dt.datetime.combine(AS_OF, dt.time())
    assert interactions["last_seen_at"].max() < dt.datetime.combine(AS_OF, dt.time())
    assert interactions.filter((pl.col("user_id") == user_id) & (pl.col("item_id") == item_id)).is_empty()
    assert PLANTED_USER not in set(interactions["user_id"]) and PLANTED_USER not in set(lists["user_id"])
    assert stats.filter(pl.col("user_id") == PLANTED_USER).is_empty() or not stats.filter(
        pl.col("user_id") == PLANTED_USER)["is_active"].any()
    assert (lists["as_of"] == AS_OF).all()


def test_replay_with_future_events_equals_replay_without_them(worlds: tuple[Store, Store, str, str]) -> None:
    clean, planted, _, _ = worlds
    without, with_future = tables(clean), tables(planted)
    for name in without:
        assert with_future[name].equals(without[name]), f"{name} differs once events at or after {AS_OF} exist"
