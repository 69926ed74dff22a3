-- One row per (period, user, item): what the user did with the item in the train, valid or holdout period.
create or replace table features.interactions as
with

periods as (
    select split as period, start_at, end_at from features.splits
),

events as (
    select p.period, e.user_id, e.item_id, e.ts, e.event_type, e.ms_played
    from raw.events as e
    inner join periods as p on e.ts >= p.start_at and e.ts < p.end_at  -- never read the future
),

per_pair as (
    select
        e.period,
        e.user_id,
        e.item_id,
        count(*) as count_events,
        count(*) filter (where e.event_type = 'play') as count_plays,
        coalesce(sum(e.ms_played) filter (where e.event_type = 'play'), 0)::bigint as ms_played_total,  -- sum() widens to hugeint
        max(e.ms_played) filter (where e.event_type = 'play') as ms_played_max,
        bool_or(e.event_type = 'play') as is_played,
        bool_or(e.event_type = 'skip') as is_skipped,
        bool_or(e.event_type = 'save') as is_saved,
        bool_or(e.event_type = 'follow') as is_followed,
        bool_or(e.event_type = 'preview') as is_previewed,
        bool_or(e.event_type = 'purchase') as is_purchased,
        min(e.ts) as first_seen_at,
        max(e.ts) as last_seen_at
    from events as e
    group by e.period, e.user_id, e.item_id
)

select
    p.period,
    p.user_id,
    p.item_id,
    i.item_type,
    p.count_events,
    p.count_plays,
    p.ms_played_total,
    case when p.ms_played_max is null or coalesce(i.duration_ms, 0) <= 0 then 0.0
        else least(p.ms_played_max / i.duration_ms, 1.0) end as completion_rate,
    p.is_played,
    p.is_skipped,
    p.is_saved,
    p.is_followed,
    p.is_previewed,
    p.is_purchased,
    p.first_seen_at,
    p.last_seen_at
from per_pair as p
inner join raw.items as i on p.item_id = i.item_id
order by p.period, p.user_id, p.item_id
