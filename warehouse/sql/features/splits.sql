-- The global temporal split, in time order: train on the window before the validation period, validate on
-- the days before the holdout (every choice reads these), hold out the last days before as_of (scored once).
create or replace table features.splits as
with

bounds as (
    select
        $as_of::timestamp - to_days($holdout_days) as holdout_start,
        $as_of::timestamp - to_days($holdout_days + $valid_days) as valid_start,
        $as_of::timestamp as as_of
)

select 'train' as split, b.valid_start - to_days($window_days) as start_at, b.valid_start as end_at from bounds as b
union all
select 'valid' as split, b.valid_start as start_at, b.holdout_start as end_at from bounds as b
union all
select 'holdout' as split, b.holdout_start as start_at, b.as_of as end_at from bounds as b
