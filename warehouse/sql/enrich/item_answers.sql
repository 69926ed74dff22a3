-- What topic accuracy is measured on: per requested item, its floor and the LLM's answer for the current model
-- and prompt version (status pending where there is none). Reads the registered relation requested (see
-- enrich/item_topics.sql).
with

answers as (
    select input_hash, status, from_json(output_json, '{"topics": ["VARCHAR"]}').topics as llm_topics
    from enrich.llm_cache
    where model = $model and prompt_version = $prompt_version
)

select
    r.item_id,
    coalesce(a.status, 'pending') as status,
    a.llm_topics,
    r.floor_topics::varchar[] as floor_topics,
    r.floor_source
from requested as r
left join answers as a on r.input_hash = a.input_hash
order by r.item_id
