-- Top-10 list of every model for every evaluated user (pre-cut training, holdout known): what the judge reads.
-- Reads the registered relation lists_frame(model, user_id, item_id, rank, score).
create or replace table eval.offline_lists as
select
    l.model::varchar as model,
    l.user_id::varchar as user_id,
    l.item_id::varchar as item_id,
    l.rank::integer as rank,
    l.score::float as score,
    $as_of::date as as_of
from lists_frame as l
order by l.model, l.user_id, l.rank
