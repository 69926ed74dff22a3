-- What profile faithfulness is measured on: per requested user, the facts of tonight and the LLM's narrative for
-- the current model and prompt version (status pending where there is none). Reads the registered relations
-- user_facts and requested (see enrich/user_profiles.sql).
with

answers as (
    select input_hash, status, output_json
    from enrich.llm_cache
    where model = $model and prompt_version = $prompt_version
)

select
    r.user_id,
    coalesce(a.status, 'pending') as status,
    a.output_json as narrative_json,
    f.facts_json
from requested as r
inner join user_facts as f on r.user_id = f.user_id
left join answers as a on r.input_hash = a.input_hash
order by r.user_id
