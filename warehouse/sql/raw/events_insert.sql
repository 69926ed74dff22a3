-- The partition's valid, first-seen events; the caller has deleted the partition's old rows.
insert into raw.events
select
    c.event_id,
    c.user_id,
    c.item_id,
    c.ts_utc as ts,
    cast(c.ts_utc as date) as event_date,
    c.event_type_clean as event_type,
    c.ms_played_int as ms_played,
    nullif(trim(c.context), '') as context,
    nullif(trim(c.country), '') as country,
    $arrival_date::date as arrival_date,
    c.source_file,
    c.source_line
from _events_classified as c
where c.reason is null and c.copy_no = 1 and not c.seen_elsewhere
order by event_date, c.event_id
