-- The global temporal split: train on the window before the cut, hold out the last days before as_of.
create or replace table features.splits as
with

bounds as (
    select
        $as_of::timestamp - to_days($holdout_days) as cut,
        $as_of::timestamp as as_of
)

select 'train' as split, b.cut - to_days($window_days) as start_at, b.cut as end_at from bounds as b
union all
select 'holdout' as split, b.cut as start_at, b.as_of as end_at from bounds as b
