-- One row per user: the SQL facts (columns and UserFacts JSON) and, where the LLM answered, the narrative
-- (UserProfile JSON). Status: ok | failed | pending (not reached yet) | no_activity (nothing to describe).
-- Reads the registered relations user_facts (enrich/user_facts.sql) and requested(user_id, input_hash).
create or replace table enrich.user_profiles as
with

answers as (
    select input_hash, status, output_json, from_json(output_json, '{"interests": ["VARCHAR"]}') as output, error
    from enrich.llm_cache
    where model = $model and prompt_version = $prompt_version
)

select
    f.user_id::varchar as user_id,
    case when r.user_id is null then 'no_activity' else coalesce(a.status, 'pending') end as status,
    f.is_active,
    f.count_events,
    f.active_days,
    f.plays_per_active_day,
    f.peak_time_of_day,
    f.type_shares,
    f.top_topics,
    f.top_items,
    f.facts_json,
    a.output_json as narrative_json,
    a.output.interests as interests,
    case when r.user_id is not null then $model::varchar end as model,
    case when r.user_id is not null then $prompt_version::varchar end as prompt_version,
    r.input_hash::varchar as input_hash,
    a.error
from user_facts as f
left join requested as r on f.user_id = r.user_id
left join answers as a on r.input_hash = a.input_hash
order by f.user_id
