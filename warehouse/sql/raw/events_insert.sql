-- The batch's valid events, each event_id once: the first copy by arrival, file, then line, unless a
-- partition outside the batch already holds that id (only the batch's ids are looked up there). The
-- caller has deleted the batch's partitions, so raw.events holds only the others.
insert into raw.events
with

repeated_hashes as (
    -- a cheap first pass on 64-bit hashes; ids are compared exactly below, and only for these
    select hash(c.event_id) as id_hash
    from _events_classified as c
    where c.reason is null
    group by id_hash
    having count(*) > 1
),

repeated as (
    select c.event_id, min((c.file_no, c.source_line)) as first_copy
    from _events_classified as c
    where c.reason is null and hash(c.event_id) in (select h.id_hash from repeated_hashes as h)
    group by c.event_id
    having count(*) > 1
),

held_elsewhere as (
    select distinct e.event_id
    from raw.events as e
    where e.event_id in (select c.event_id from _events_classified as c where c.reason is null)
)

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
left join repeated as r on v.event_id = r.event_id
where v.reason is null
    and (r.event_id is null or (v.file_no, v.source_line) = r.first_copy)
    and v.event_id not in (select h.event_id from held_elsewhere as h)
order by v.arrival_date, v.ts  -- sorted input takes the batch insert; zone maps then serve both filters
