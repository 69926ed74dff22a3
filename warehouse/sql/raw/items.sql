-- The catalogue: per item_id the record from the file last by name (then last in that file) wins.
create or replace table raw.items as
with

ranked as (
    select
        s.*,
        row_number() over (partition by trim(s.item_id) order by s.file_rank desc, s.source_line desc) as newest
    from _items_stage as s
    where s.reason is null
)

select
    trim(r.item_id) as item_id,
    lower(trim(r.item_type)) as item_type,
    r.title,
    r.description,
    r.creator,
    nullif(trim(r.language), '') as language,
    case
        when r.genres is null or trim(r.genres) = '' then []::varchar[]
        when starts_with(trim(r.genres), '[') then from_json(r.genres, '["VARCHAR"]')
        else list_filter(list_transform(string_split(r.genres, '|'), lambda g: trim(g)), lambda g: g <> '')
    end as genres,
    try_cast(r.duration_ms as bigint) as duration_ms,
    try_cast(r.release_date as date) as release_date,
    try_cast(r.is_paid as boolean) as is_paid,
    r.source_file
from ranked as r
where r.newest = 1
order by item_id
