-- One row per user: activity by type in the train period; warm or cold for the target type.
create or replace table features.user_stats as
with

train as (
    select * from features.interactions where period = 'train'
),

per_user as (
    select
        t.user_id,
        -- sum() widens bigint to hugeint; the contract is bigint
        sum(t.count_events)::bigint as count_events,
        coalesce(sum(t.count_plays) filter (where t.item_type = 'music'), 0)::bigint as count_music_plays,
        coalesce(sum(t.count_plays) filter (where t.item_type = 'podcast'), 0)::bigint as count_podcast_plays,
        coalesce(sum(t.count_plays) filter (where t.item_type = 'audiobook'), 0)::bigint as count_audiobook_plays,
        count(*) as count_items,
        bool_or(t.item_type = $target_type) as is_warm
    from train as t
    group by t.user_id
),

holdout_users as (
    select distinct user_id from features.interactions where period = 'holdout' and item_type = $target_type
)

select
    u.user_id,
    u.country,
    u.age_bucket,
    u.plan,
    coalesce(p.count_events, 0) as count_events,
    coalesce(p.count_music_plays, 0) as count_music_plays,
    coalesce(p.count_podcast_plays, 0) as count_podcast_plays,
    coalesce(p.count_audiobook_plays, 0) as count_audiobook_plays,
    coalesce(p.count_items, 0) as count_items,
    p.user_id is not null as is_active,
    coalesce(p.is_warm, false) as is_warm,
    h.user_id is not null as has_holdout_target
from raw.users as u
left join per_user as p on u.user_id = p.user_id
left join holdout_users as h on u.user_id = h.user_id
order by u.user_id
