-- Type every staged record and give each bad one its first reason; only rejects keep their text.
-- Values are trimmed only where they start (or end) with a space, inside a case: trimming every value
-- costs more than all the other checks together. list_contains and a left join keep value sets out of
-- mark joins, which cost more.
create or replace temp table _events_classified as
with

typed as (
    select
        s.*,
        f.arrival_date,
        -- the instant in UTC whatever the session time zone: epoch microseconds are zone-free
        make_timestamp(epoch_us(try_cast(s.ts as timestamptz))) as ts_utc,
        try_cast(s.ms_played as bigint) as ms_played_int,
        case when list_contains(['play', 'skip', 'save', 'follow', 'purchase', 'preview'], s.event_type) then s.event_type
            else lower(trim(s.event_type)) end as event_type_clean,
        i.item_id is not null as is_known_item
    from _events_stage as s
    inner join _events_files as f on s.file_no = f.file_no
    left join (select distinct item_id from raw.items) as i on s.item_id = i.item_id
),

reasoned as (
    select
        t.*,
        case
            when t.parse_error is not null then t.parse_error
            when coalesce(case when starts_with(t.event_id, ' ') then trim(t.event_id) else t.event_id end, '') = ''
                then 'missing_field: event_id'
            when coalesce(case when starts_with(t.user_id, ' ') then trim(t.user_id) else t.user_id end, '') = ''
                then 'missing_field: user_id'
            when coalesce(case when starts_with(t.item_id, ' ') then trim(t.item_id) else t.item_id end, '') = ''
                then 'missing_field: item_id'
            when coalesce(case when starts_with(t.ts, ' ') then trim(t.ts) else t.ts end, '') = '' then 'missing_field: ts'
            when t.event_type_clean is null or t.event_type_clean = '' then 'missing_field: event_type'
            when t.ms_played is null then 'missing_field: ms_played'
            when t.ts_utc is null then 'bad_timestamp'
            when not list_contains(['play', 'skip', 'save', 'follow', 'purchase', 'preview'], t.event_type_clean)
                then 'bad_event_type'
            when t.ms_played_int is null then 'bad_ms_played'
            when t.ms_played_int < 0 then 'negative_ms_played'
            when t.ts_utc >= t.arrival_date + interval 1 day then 'future_timestamp'
            when not t.is_known_item then 'unknown_item'
        end as reason
    from typed as t
)

select
    r.arrival_date,
    r.file_no,
    r.source_line,
    r.reason,
    case when r.reason is not null then coalesce(r.raw_record, to_json(struct_pack(
        event_id := r.event_id, user_id := r.user_id, item_id := r.item_id, ts := r.ts,
        event_type := r.event_type, ms_played := r.ms_played, context := r.context, country := r.country
    ))::varchar) end as raw_record,
    r.event_id,
    r.user_id,
    r.item_id,
    r.ts_utc as ts,
    cast(r.ts_utc as date) as event_date,
    r.event_type_clean as event_type,
    r.ms_played_int as ms_played,
    case when starts_with(r.context, ' ') or ends_with(r.context, ' ') then nullif(trim(r.context), '')
        else nullif(r.context, '') end as context,
    case when starts_with(r.country, ' ') or ends_with(r.country, ' ') then nullif(trim(r.country), '')
        else nullif(r.country, '') end as country
from reasoned as r
