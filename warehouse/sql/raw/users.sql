-- Users: per user_id the record from the file last by name (then last in that file) wins.
create or replace table raw.users as
with

ranked as (
    select
        s.*,
        row_number() over (partition by trim(s.user_id) order by s.file_rank desc, s.source_line desc) as newest
    from _users_stage as s
    where s.reason is null
)

select
    trim(r.user_id) as user_id,
    nullif(trim(r.country), '') as country,
    nullif(trim(r.age_bucket), '') as age_bucket,
    try_cast(r.signup_date as date) as signup_date,
    nullif(trim(r.plan), '') as plan,
    r.source_file
from ranked as r
where r.newest = 1
order by user_id
