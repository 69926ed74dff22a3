-- Type every staged record and give each bad one its first reason; the rest are ranked by event_id
-- so that repeats (here or in other partitions) count once.
create or replace temp table _events_classified as
with

typed as (
    select
        s.*,
        try_cast(s.ts as timestamptz) at time zone 'UTC' as ts_utc,
        try_cast(s.ms_played as bigint) as ms_played_int,
        lower(trim(s.event_type)) as event_type_clean
    from _events_stage as s
),

reasoned as (
    select
        t.*,
        case
            when t.parse_error is not null then t.parse_error
            when nullif(trim(t.event_id), '') is null then 'missing_field: event_id'
            when nullif(trim(t.user_id), '') is null then 'missing_field: user_id'
            when nullif(trim(t.item_id), '') is null then 'missing_field: item_id'
            when nullif(trim(t.ts), '') is null then 'missing_field: ts'
            when nullif(trim(t.event_type), '') is null then 'missing_field: event_type'
            when t.ms_played is null then 'missing_field: ms_played'
            when t.ts_utc is null then 'bad_timestamp'
            when t.event_type_clean not in ('play', 'skip', 'save', 'follow', 'purchase', 'preview') then 'bad_event_type'
            when t.ms_played_int is null then 'bad_ms_played'
            when t.ms_played_int < 0 then 'negative_ms_played'
            when t.ts_utc >= $arrival_date::date + interval 1 day then 'future_timestamp'
            when t.item_id not in (select item_id from raw.items) then 'unknown_item'
        end as reason
    from typed as t
)

select
    r.*,
    case when r.reason is null then
        row_number() over (partition by r.reason is null, r.event_id order by r.source_file, r.source_line)
    end as copy_no,
    r.reason is null and r.event_id in (
        select e.event_id from raw.events as e where e.arrival_date <> $arrival_date::date
    ) as seen_elsewhere
from reasoned as r
