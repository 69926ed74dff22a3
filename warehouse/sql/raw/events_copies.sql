-- Every valid copy of an event_id that the batch holds more than once, or that a partition outside the
-- batch already stores, and whether it is the copy kept: the stored one, else the first by arrival,
-- file name, then line. A copy whose payload differs from the kept one is a conflicting duplicate; an
-- identical one is an exact repeat. The caller has deleted the batch's partitions, so raw.events holds
-- only the others.
create or replace temp table _events_copies as
with

repeated_hashes as (
    -- a cheap first pass on 64-bit hashes; ids are compared exactly below, and only for these
    select hash(c.event_id) as id_hash
    from _events_classified as c
    where c.reason is null
    group by id_hash
    having count(*) > 1
),

stored as materialized (
    -- only the batch's ids are looked up; file_no -1 ranks a stored copy before any of the batch
    select e.event_id, -1 as file_no, 0::bigint as source_line, null::date as arrival_date,
        e.user_id, e.item_id, e.ts, e.event_type, e.ms_played, e.context, e.country
    from raw.events as e
    where e.event_id in (select c.event_id from _events_classified as c where c.reason is null)
),

copies as (
    select c.event_id, c.file_no, c.source_line, c.arrival_date,
        c.user_id, c.item_id, c.ts, c.event_type, c.ms_played, c.context, c.country
    from _events_classified as c
    where c.reason is null
        and (hash(c.event_id) in (select h.id_hash from repeated_hashes as h)
            or c.event_id in (select s.event_id from stored as s))
    union all
    select * from stored
),

ranked as (
    select
        *,
        row_number() over by_copy as copy_rank,
        first_value(row(user_id, item_id, ts, event_type, ms_played, context, country)) over by_copy as kept_payload
    from copies
    window by_copy as (partition by event_id order by file_no, source_line)
)

select
    r.arrival_date,
    r.file_no,
    r.source_line,
    r.copy_rank = 1 as is_kept,
    row(r.user_id, r.item_id, r.ts, r.event_type, r.ms_played, r.context, r.country) is distinct from r.kept_payload
        as is_conflicting
from ranked as r
where r.file_no >= 0
