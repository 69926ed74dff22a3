-- Quarantine: every bad record with its reason, file and line, so nothing is dropped silently.
insert into raw.rejected_events
select
    $arrival_date::date as arrival_date,
    c.source_file,
    c.source_line,
    c.reason,
    nullif(trim(c.event_id), '') as event_id,
    coalesce(c.raw_record, to_json(struct_pack(
        event_id := c.event_id, user_id := c.user_id, item_id := c.item_id, ts := c.ts,
        event_type := c.event_type, ms_played := c.ms_played, context := c.context, country := c.country
    ))::varchar) as raw_record
from _events_classified as c
where c.reason is not null
