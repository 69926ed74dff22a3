-- What the feature tables leave out, and why: events in the split window of items no longer in raw.items
-- (features.interactions joins the catalogue) and users with listening but no row in raw.users
-- (features.user_stats lists raw.users).
with

window_events as (
    select e.user_id, e.item_id
    from raw.events as e
    inner join features.splits as p on e.ts >= p.start_at and e.ts < p.end_at
),

unknown_items as (
    select count(*) as count_events, count(distinct w.item_id) as count_items
    from window_events as w
    anti join raw.items as i on w.item_id = i.item_id
),

unknown_users as (
    select count(*) as count_events, count(distinct w.user_id) as count_users
    from window_events as w
    semi join raw.items as i on w.item_id = i.item_id
    anti join raw.users as u on w.user_id = u.user_id
)

select
    i.count_events as count_events_of_items_not_in_catalogue,
    i.count_items as count_items_not_in_catalogue,
    u.count_events as count_events_of_users_not_in_raw_users,
    u.count_users as count_users_not_in_raw_users
from unknown_items as i, unknown_users as u
