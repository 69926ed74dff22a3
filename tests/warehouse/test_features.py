"""Feature tables: contracts, the temporal split without leakage, and known answers on hand-made events."""
from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from quality.contracts import FEATURES as CONTRACTS  # what readers rely on, and the gates check
from warehouse import ingest
from warehouse.features import (FEATURE_TABLES, FeatureParams, build_table, days_with_events, latest_as_of,
                               left_out, thin_train_warning)

def rows(con: duckdb.DuckDBPyConnection, query: str) -> list[tuple]:
    return con.execute(query).fetchall()


# --- the sample world ---------------------------------------------------------------------------

@pytest.mark.parametrize("table", sorted(CONTRACTS))
def test_feature_table_columns_and_types(ingested_world, table: str) -> None:
    with ingested_world.store.read() as con:
        assert {name: kind for name, kind, *_ in rows(con, f"describe {table}")} == CONTRACTS[table]


def test_splits_follow_the_settings(ingested_world) -> None:
    with ingested_world.store.read() as con:
        splits = rows(con, "select split, start_at, end_at from features.splits order by start_at")
    as_of = dt.datetime.combine(ingested_world.params.as_of, dt.time())
    cut = as_of - dt.timedelta(days=14)
    valid = cut - dt.timedelta(days=14)
    assert splits == [("train", valid - dt.timedelta(days=90), valid), ("valid", valid, cut), ("holdout", cut, as_of)]


def test_no_interaction_reads_outside_its_period(ingested_world) -> None:
    with ingested_world.store.read() as con:
        outside = rows(con, """
            select i.period, count(*) from features.interactions as i
            inner join features.splits as s on s.split = i.period
            where i.first_seen_at < s.start_at or i.last_seen_at >= s.end_at
            group by 1
        """)
        latest = rows(con, "select max(last_seen_at) from features.interactions")[0][0]
    assert outside == []
    assert latest < dt.datetime.combine(ingested_world.params.as_of, dt.time())


def test_interactions_account_for_every_event_in_the_window(ingested_world) -> None:
    with ingested_world.store.read() as con:
        by_period = rows(con, """
            select s.split, (select coalesce(sum(count_events), 0) from features.interactions where period = s.split),
                   (select count(*) from raw.events where ts >= s.start_at and ts < s.end_at)
            from features.splits as s order by 1
        """)
    assert [(period, counted) for period, counted, _ in by_period] == [(period, events) for period, _, events in by_period]
    assert all(events > 0 for *_, events in by_period)


def test_warm_and_cold_users_match_the_simulator(ingested_world) -> None:
    # The simulator's conversion window is the features' validation and holdout: the last 28 days before as_of.
    summary = ingested_world.summary
    params = ingested_world.params
    assert summary.holdout_start == params.as_of - dt.timedelta(days=params.holdout_days + params.valid_days)
    with ingested_world.store.read() as con:
        users, cold, cold_with_target = rows(con, """
            select count(*), count(*) filter (where not is_warm),
                   count(*) filter (where not is_warm and user_id in (
                       select user_id from features.interactions
                       where period in ('valid', 'holdout') and item_type = 'audiobook'))
            from features.user_stats
        """)[0]
    assert users == summary.users
    assert cold == summary.users_without_target_history
    assert cold_with_target == summary.cold_users_with_holdout_target


def test_item_stats_cover_the_catalogue_with_ordered_tiers(ingested_world) -> None:
    with ingested_world.store.read() as con:
        assert rows(con, "select count(*) from features.item_stats") == rows(con, "select count(*) from raw.items")
        # within a type, every item of tier t has at least as many listeners as any item of tier t + 1
        inversions = rows(con, """
            select count(*) from features.item_stats as a
            inner join features.item_stats as b
                on a.item_type = b.item_type and a.popularity_tier < b.popularity_tier and a.count_listeners < b.count_listeners
        """)[0][0]
        silent_tiers = rows(con, "select distinct popularity_tier from features.item_stats where count_listeners = 0")
    assert inversions == 0
    assert silent_tiers == [(5,)]


def test_co_listen_edges_are_ordered_pairs_of_graph_types(ingested_world) -> None:
    with ingested_world.store.read() as con:
        relations = rows(con, "select relation, count(*) from features.co_listen_edges group by 1 order by 1")
        broken = rows(con, """
            select count(*) filter (where not e.src_item_id < e.dst_item_id),
                   count(*) filter (where s.item_type is distinct from e.src_type or d.item_type is distinct from e.dst_type),
                   count(*) filter (where e.co_listeners < 1)
            from features.co_listen_edges as e
            left join raw.items as s on s.item_id = e.src_item_id
            left join raw.items as d on d.item_id = e.dst_item_id
        """)[0]
    assert [relation for relation, _ in relations] == ["audiobook__audiobook", "audiobook__podcast", "podcast__podcast"]
    assert broken == (0, 0, 0)


def test_latest_as_of_is_the_day_after_the_newest_event(ingested_world) -> None:
    with ingested_world.store.read() as con:
        assert latest_as_of(con) == ingested_world.summary.end_date + dt.timedelta(days=1)


def test_unknown_feature_table_is_refused(ingested_world) -> None:
    with ingested_world.store.read() as con, pytest.raises(ValueError, match="interactions"):
        build_table(con, "interaction", ingested_world.params)


# --- hand-made events with known answers --------------------------------------------------------
# as_of 2026-11-02, holdout 3 days, window 7 days: train [10-23, 10-30), holdout [10-30, 11-02).

AS_OF = dt.date(2026, 11, 2)
PARAMS = FeatureParams(as_of=AS_OF, window_days=7, holdout_days=3, valid_days=0)
EVENTS = [
    # train
    ("u1-p1-a", "u1", "p1", "2026-10-24T10:00:00Z", "play", 300_000),
    ("u1-p1-b", "u1", "p1", "2026-10-25T10:00:00Z", "play", 900_000),  # longer than the item: completion caps at 1
    ("u1-p1-c", "u1", "p1", "2026-10-26T10:00:00Z", "skip", 1_000),
    ("u1-a1", "u1", "a1", "2026-10-27T10:00:00Z", "play", 120_000),
    ("u1-m1", "u1", "m1", "2026-10-28T10:00:00Z", "play", 200_000),
    ("u2-p1", "u2", "p1", "2026-10-24T11:00:00Z", "play", 600_000),
    ("u2-a1", "u2", "a1", "2026-10-25T11:00:00Z", "play", 600_000),
    ("u2-p2", "u2", "p2", "2026-10-26T11:00:00Z", "play", 60_000),
    ("u3-a2", "u3", "a2", "2026-10-29T23:59:59.999999Z", "save", 0),  # the last instant before the cut
    ("u4-p2", "u4", "p2", "2026-10-23T00:00:00Z", "play", 300_000),  # the first instant of the window
    ("u4-p3", "u4", "p3", "2026-10-22T23:59:59.999999Z", "play", 300_000),  # before the window
    # holdout
    ("u3-a3", "u3", "a3", "2026-10-30T00:00:00Z", "play", 300_000),  # exactly at the cut
    ("u5-a1", "u5", "a1", "2026-11-01T23:59:59.999999Z", "play", 600_000),  # the last instant before as_of
    ("u5-p3", "u5", "p3", "2026-11-01T12:00:00Z", "play", 60_000),
    # at or after as_of: nowhere
    ("u6-a2", "u6", "a2", "2026-11-02T00:00:00Z", "play", 600_000),
    ("u6-p2", "u6", "p2", "2026-11-03T09:00:00Z", "play", 600_000),
    ("u1-a3", "u1", "a3", "2026-11-04T09:00:00Z", "play", 600_000),
    ("u2-p3", "u2", "p3", "2026-11-04T10:00:00Z", "play", 600_000),
]


@pytest.fixture
def hand_features(hand_landing, hand_store, ingest_hand):
    """The events above ingested from one late-arriving file, features built; yields a read connection."""

    def build(params: FeatureParams = PARAMS):
        kinds = (("m", "music"), ("p", "podcast"), ("a", "audiobook"))
        items = [hand_landing.item(f"{prefix}{n}", kind) for prefix, kind in kinds for n in (1, 2, 3)]
        items.append(hand_landing.item("a4", "audiobook", release_date="2026-11-10"))
        hand_landing.catalog(items=items)
        hand_landing.events("2026-11-05", [
            hand_landing.event(event_id, user_id=user, item_id=item, ts=ts, event_type=kind, ms_played=ms)
            for event_id, user, item, ts, kind, ms in EVENTS
        ])
        (result,) = ingest_hand("2026-11-05").values()
        assert result.accepted == len(EVENTS)
        with hand_store.write() as con:
            for name in FEATURE_TABLES:
                build_table(con, name, params)
        return hand_store.read()

    return build


def test_hand_splits(hand_features) -> None:
    with hand_features() as con:
        assert rows(con, "select split, start_at, end_at from features.splits order by start_at") == [
            ("train", dt.datetime(2026, 10, 23), dt.datetime(2026, 10, 30)),
            ("valid", dt.datetime(2026, 10, 30), dt.datetime(2026, 10, 30)),  # valid_days 0: no validation
            ("holdout", dt.datetime(2026, 10, 30), dt.datetime(2026, 11, 2)),
        ]


def test_hand_interactions(hand_features) -> None:
    with hand_features() as con:
        found = rows(con, """
            select period, user_id, item_id, item_type, count_events, count_plays, ms_played_total,
                   round(completion_rate, 6), is_played, is_skipped, is_saved
            from features.interactions order by period desc, user_id, item_id
        """)
    assert found == [
        ("train", "u1", "a1", "audiobook", 1, 1, 120_000, 0.2, True, False, False),
        ("train", "u1", "m1", "music", 1, 1, 200_000, 0.333333, True, False, False),
        ("train", "u1", "p1", "podcast", 3, 2, 1_200_000, 1.0, True, True, False),
        ("train", "u2", "a1", "audiobook", 1, 1, 600_000, 1.0, True, False, False),
        ("train", "u2", "p1", "podcast", 1, 1, 600_000, 1.0, True, False, False),
        ("train", "u2", "p2", "podcast", 1, 1, 60_000, 0.1, True, False, False),
        ("train", "u3", "a2", "audiobook", 1, 0, 0, 0.0, False, False, True),
        ("train", "u4", "p2", "podcast", 1, 1, 300_000, 0.5, True, False, False),
        ("holdout", "u3", "a3", "audiobook", 1, 1, 300_000, 0.5, True, False, False),
        ("holdout", "u5", "a1", "audiobook", 1, 1, 600_000, 1.0, True, False, False),
        ("holdout", "u5", "p3", "podcast", 1, 1, 60_000, 0.1, True, False, False),
    ]


def test_hand_interactions_first_and_last_seen(hand_features) -> None:
    with hand_features() as con:
        seen = rows(con, "select first_seen_at, last_seen_at from features.interactions where user_id = 'u1' and item_id = 'p1'")
    assert seen == [(dt.datetime(2026, 10, 24, 10), dt.datetime(2026, 10, 26, 10))]


def test_nothing_at_or_after_as_of_appears_anywhere(hand_features) -> None:
    with hand_features() as con:
        late_ids = {event_id for event_id, _, _, ts, _, _ in EVENTS if ts >= "2026-11-02"}
        assert late_ids == {"u6-a2", "u6-p2", "u1-a3", "u2-p3"}
        assert rows(con, "select count(*) from features.interactions where user_id = 'u6'") == [(0,)]
        assert rows(con, "select count(*) from features.interactions where (user_id, item_id) in (('u1', 'a3'), ('u2', 'p3'))") == [(0,)]
        assert rows(con, "select is_active, is_warm, has_holdout_target from features.user_stats where user_id = 'u6'") == [
            (False, False, False),
        ]
        assert rows(con, "select count_listeners from features.item_stats where item_id = 'a3'") == [(0,)]
        assert rows(con, "select count(*) from features.co_listen_edges where 'p3' in (src_item_id, dst_item_id)") == [(0,)]


def test_no_holdout_event_reaches_train_rows(hand_features) -> None:
    with hand_features() as con:
        train = rows(con, "select user_id, item_id, last_seen_at from features.interactions where period = 'train'")
    cut = dt.datetime(2026, 10, 30)
    assert all(last_seen < cut for *_, last_seen in train)
    assert ("u3", "a3") not in {(user, item) for user, item, _ in train}  # exactly at the cut: holdout
    assert ("u4", "p3") not in {(user, item) for user, item, _ in train}  # before the window


def test_hand_user_stats(hand_features) -> None:
    with hand_features() as con:
        found = rows(con, """
            select user_id, count_events, count_music_plays, count_podcast_plays, count_audiobook_plays, count_items,
                   is_active, is_warm, has_holdout_target
            from features.user_stats order by user_id
        """)
    assert found == [
        ("u1", 5, 1, 2, 1, 3, True, True, False),
        ("u2", 3, 0, 2, 1, 3, True, True, False),
        ("u3", 1, 0, 0, 0, 1, True, True, True),  # a save is a target-type interaction: warm
        ("u4", 1, 0, 1, 0, 1, True, False, False),
        ("u5", 0, 0, 0, 0, 0, False, False, True),
        ("u6", 0, 0, 0, 0, 0, False, False, False),
    ]


def test_hand_item_stats(hand_features) -> None:
    with hand_features() as con:
        found = rows(con, """
            select item_id, count_listeners, count_plays, round(median_completion, 6), popularity_tier, is_released
            from features.item_stats order by item_id
        """)
    assert found == [
        ("a1", 2, 2, 0.6, 1, True),
        ("a2", 0, 0, None, 5, True),  # saved, never played
        ("a3", 0, 0, None, 5, True),
        ("a4", 0, 0, None, 5, False),  # released after as_of
        ("m1", 1, 1, 0.333333, 1, True),
        ("m2", 0, 0, None, 5, True),
        ("m3", 0, 0, None, 5, True),
        ("p1", 2, 3, 1.0, 1, True),
        ("p2", 2, 2, 0.3, 2, True),  # ties on listeners are broken by item_id
        ("p3", 0, 0, None, 5, True),
    ]


def test_hand_co_listen_edges(hand_features) -> None:
    with hand_features() as con:
        found = rows(con, "select * from features.co_listen_edges order by src_item_id, dst_item_id")
    assert found == [
        ("a1", "p1", "audiobook", "podcast", "audiobook__podcast", 2),
        ("a1", "p2", "audiobook", "podcast", "audiobook__podcast", 1),
        ("p1", "p2", "podcast", "podcast", "podcast__podcast", 1),
    ]


def test_min_co_listeners_drops_weaker_pairs(hand_features) -> None:
    with hand_features(FeatureParams(as_of=AS_OF, window_days=7, holdout_days=3, valid_days=0, min_co_listeners=2)) as con:
        assert rows(con, "select src_item_id, dst_item_id, co_listeners from features.co_listen_edges") == [("a1", "p1", 2)]


def test_target_type_decides_warmth(hand_features) -> None:
    with hand_features(FeatureParams(as_of=AS_OF, window_days=7, holdout_days=3, valid_days=0, target_type="podcast")) as con:
        warm = rows(con, "select user_id from features.user_stats where is_warm order by 1")
        holdout = rows(con, "select user_id from features.user_stats where has_holdout_target order by 1")
    assert warm == [("u1",), ("u2",), ("u4",)]
    assert holdout == [("u5",)]


def test_an_earlier_as_of_moves_every_window(hand_features) -> None:
    # as_of 10-29: holdout [10-26, 10-29), train [10-19, 10-26); the save at 10-29 23:59 is now in the future
    with hand_features(FeatureParams(as_of=dt.date(2026, 10, 29), window_days=7, holdout_days=3, valid_days=0)) as con:
        found = rows(con, "select period, user_id, item_id from features.interactions order by 1 desc, 2, 3")
        warm = rows(con, "select user_id from features.user_stats where is_warm")
    assert found == [
        ("train", "u1", "p1"), ("train", "u2", "a1"), ("train", "u2", "p1"), ("train", "u4", "p2"), ("train", "u4", "p3"),
        ("holdout", "u1", "a1"), ("holdout", "u1", "m1"), ("holdout", "u1", "p1"), ("holdout", "u2", "p2"),
    ]
    assert warm == [("u2",)]


def test_days_with_events_per_period_and_the_thin_train_warning(hand_features) -> None:
    with hand_features() as con:
        days = days_with_events(con)
    # train [10-23, 10-30): every day holds an event (u4-p3 on 10-22 is before the window); no validation;
    # holdout [10-30, 11-02): 10-30 and 11-01; events on and after as-of count nowhere
    assert days == {"days_with_events_train": 7, "days_with_events_valid": 0, "days_with_events_holdout": 2}
    assert thin_train_warning(days) is None
    # a 30-day landing zone under 14 + 14 days of validation and holdout: 2 days of train
    thin = thin_train_warning({"days_with_events_train": 2, "days_with_events_valid": 14, "days_with_events_holdout": 14})
    assert thin is not None and "on 2 days against 14" in thin and "valid_days" in thin


def test_rows_that_leave_the_chain_are_counted(hand_features, hand_landing, hand_store, ingest_hand) -> None:
    with hand_features() as con:
        assert left_out(con) == {"count_events_of_items_not_in_catalogue": 0, "count_items_not_in_catalogue": 0,
                                 "count_events_of_users_not_in_raw_users": 0, "count_users_not_in_raw_users": 0}
    # A new catalogue snapshot without p1, a users file without u5: their window events leave at features.
    kept = [hand_landing.item(f"{prefix}{n}", kind) for prefix, kind in (("m", "music"), ("p", "podcast"),
                                                                           ("a", "audiobook")) for n in (1, 2, 3)
            if f"{prefix}{n}" != "p1"]
    hand_landing.catalog(items=kept, users=[hand_landing.user(f"u{n}") for n in (1, 2, 3, 4, 6)])
    with hand_store.write() as con:
        ingest.ingest_items(con, hand_landing.root, ("music", "podcast", "audiobook"))
        ingest.ingest_users(con, hand_landing.root)
        for name in FEATURE_TABLES:
            build_table(con, name, PARAMS)
    with hand_store.read() as con:
        counted = left_out(con)
        interactions = rows(con, "select count(*) from features.interactions where item_id = 'p1'")
        users = rows(con, "select count(*) from features.user_stats where user_id = 'u5'")
    # p1: u1 three times and u2 once in the train window; u5: a1 and p3 in the holdout
    assert counted == {"count_events_of_items_not_in_catalogue": 4, "count_items_not_in_catalogue": 1,
                       "count_events_of_users_not_in_raw_users": 2, "count_users_not_in_raw_users": 1}
    assert interactions == [(0,)] and users == [(0,)]
