-- Facts per user over the train period, one row for every user in features.user_stats (most active first):
-- what the profile prompt and template are rendered from and what the profile embedding reads. Item topics
-- come from enrich.item_topics (the LLM's where used, else the floor's), else, for other types, the genres.
with

train as (
    select start_at, end_at from features.splits where split = 'train'
),

item_topics as (
    select
        i.item_id,
        coalesce(i.title, i.item_id) as title,
        i.item_type,
        coalesce(t.topics, i.genres, []::varchar[]) as topics
    from raw.items as i
    left join enrich.item_topics as t on i.item_id = t.item_id
),

engaged as (
    select x.user_id, x.item_id, x.count_events, x.count_plays, x.ms_played_total, x.completion_rate,
        it.title, it.item_type, it.topics
    from features.interactions as x
    inner join item_topics as it on x.item_id = it.item_id
    where x.period = 'train'
),

plays_by_type as (
    select user_id, item_type, sum(count_plays) as plays
    from engaged
    group by user_id, item_type
    having sum(count_plays) > 0
),

type_shares as (
    select
        user_id,
        map_from_entries(list((item_type, round(plays / total, 4)) order by item_type)) as type_shares
    from (select *, sum(plays) over (partition by user_id) as total from plays_by_type)
    group by user_id
),

topic_weights as (
    select user_id, unnest(topics) as topic, count_events
    from engaged
),

ranked_topics as (
    select user_id, topic,
        row_number() over (partition by user_id order by sum(count_events) desc, topic) as topic_rank
    from topic_weights
    group by user_id, topic
),

top_topics as (
    select user_id, list(topic order by topic_rank) as top_topics
    from ranked_topics
    where topic_rank <= $max_topics
    group by user_id
),

ranked_items as (
    select *,
        -- time spent first, then any engagement (weak signals count too), then a fixed order
        row_number() over (partition by user_id order by ms_played_total desc, count_events desc, item_id) as item_rank
    from engaged
),

top_items as (
    select
        user_id,
        list(struct_pack(
            title := title, item_type := item_type, completion_rate := round(completion_rate, 3), topics := topics
        ) order by item_rank) as top_items
    from ranked_items
    where item_rank <= $max_items
    group by user_id
),

train_events as (
    -- timestamps are UTC: the time of day is the platform's clock, not the listener's
    select e.user_id, e.event_date, e.event_type,
        case when hour(e.ts) < 6 then 'night' when hour(e.ts) < 12 then 'morning'
            when hour(e.ts) < 18 then 'afternoon' else 'evening' end as time_of_day
    from raw.events as e
    inner join raw.items as i on e.item_id = i.item_id
    cross join train as t
    where e.ts >= t.start_at and e.ts < t.end_at
),

activity as (
    select user_id, count(distinct event_date) as active_days, count(*) filter (where event_type = 'play') as plays
    from train_events
    group by user_id
),

peak_time as (
    -- plays decide the peak; a user with no plays is placed by their other events
    select user_id, time_of_day,
        row_number() over (
            partition by user_id order by count(*) filter (where event_type = 'play') desc, count(*) desc, time_of_day
        ) as peak_rank
    from train_events
    group by user_id, time_of_day
),

facts as (
    select
        u.user_id,
        u.is_active,
        u.count_events,
        coalesce(a.active_days, 0)::integer as active_days,
        coalesce(round(a.plays / nullif(a.active_days, 0), 2), 0.0)::double as plays_per_active_day,
        coalesce(p.time_of_day, 'none') as peak_time_of_day,
        coalesce(s.type_shares, map([]::varchar[], []::double[])) as type_shares,
        coalesce(tt.top_topics, []::varchar[]) as top_topics,
        coalesce(ti.top_items, []) as top_items
    from features.user_stats as u
    left join activity as a on u.user_id = a.user_id
    left join peak_time as p on u.user_id = p.user_id and p.peak_rank = 1
    left join type_shares as s on u.user_id = s.user_id
    left join top_topics as tt on u.user_id = tt.user_id
    left join top_items as ti on u.user_id = ti.user_id
)

select
    *,
    to_json(struct_pack(
        user_id := user_id, type_shares := type_shares, top_topics := top_topics, active_days := active_days,
        plays_per_active_day := plays_per_active_day, peak_time_of_day := peak_time_of_day, top_items := top_items
    )) as facts_json
from facts
order by count_events desc, user_id
