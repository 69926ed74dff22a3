-- One row per catalogue item: reach and completion in the train period, popularity tier per type.
create or replace table features.item_stats as
with

per_item as (
    select
        t.item_id,
        count(distinct t.user_id) filter (where t.is_played) as count_listeners,
        sum(t.count_plays)::bigint as count_plays,  -- sum() widens to hugeint
        median(t.completion_rate) filter (where t.is_played) as median_completion
    from features.interactions as t
    where t.period = 'train'
    group by t.item_id
),

joined as (
    select
        i.item_id,
        i.item_type,
        i.language,
        coalesce(p.count_listeners, 0) as count_listeners,
        coalesce(p.count_plays, 0) as count_plays,
        p.median_completion,
        coalesce(i.release_date < $as_of::date, true) as is_released
    from raw.items as i
    left join per_item as p on i.item_id = p.item_id
)

select
    j.*,
    cast(case when j.count_listeners = 0 then 5
        else ntile(5) over (partition by j.item_type, j.count_listeners > 0 order by j.count_listeners desc, j.item_id)
    end as integer) as popularity_tier
from joined as j
order by j.item_id
