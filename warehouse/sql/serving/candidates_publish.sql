-- Second half of a publish: the gated staging rows of the as-of date become the served lists. gated_staging is
-- serving.candidates_staging at the snapshot its gate published (assets/serving.py), never rows staged since.
insert into serving.candidates
select s.user_id, s.item_id, s.rank, s.score, s.explanation, s.as_of, s.is_fallback, s.model_version, s.model
from gated_staging as s
where s.as_of = $as_of::date
order by s.user_id, s.rank
