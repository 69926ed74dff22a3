-- Quarantine: every bad record with its reason, file and line, so nothing is dropped silently.
insert into raw.rejected_events
select
    c.arrival_date,
    f.source_file,
    c.source_line,
    c.reason,
    nullif(trim(c.event_id), '') as event_id,
    c.raw_record
from _events_classified as c
inner join _events_files as f on c.file_no = f.file_no
where c.reason is not null
