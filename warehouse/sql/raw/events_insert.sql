-- The batch's valid events, each event_id once: every copy but the kept one (see events_copies) stays out.
insert into raw.events
select
    v.event_id,
    v.user_id,
    v.item_id,
    v.ts,
    v.event_date,
    v.event_type,
    v.ms_played,
    v.context,
    v.country,
    v.arrival_date,
    f.source_file,
    v.source_line
from _events_classified as v
inner join _events_files as f on v.file_no = f.file_no
left join _events_copies as d on v.file_no = d.file_no and v.source_line = d.source_line
where v.reason is null and coalesce(d.is_kept, true)
order by v.arrival_date, v.ts  -- sorted input takes the batch insert; zone maps then serve both filters
