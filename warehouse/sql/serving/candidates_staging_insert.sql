-- One chunk of candidate rows (the registered relation `chunk`) staged for the as-of date.
insert into serving.candidates_staging
select
    c.user_id, c.item_id, c.rank, c.score, c.explanation, $as_of::date as as_of, c.is_fallback, c.model_version, c.model
from chunk as c
