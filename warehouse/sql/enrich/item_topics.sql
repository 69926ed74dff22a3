-- One row per item asked about: the LLM's answer from enrich.llm_cache, or status 'pending' while the budget
-- has not reached it (or its endpoint failed). Reads the registered relation
-- requested(item_id, item_type, input_hash).
create or replace table enrich.item_topics as
with

answers as (
    select
        input_hash,
        status,
        from_json(
            output_json, '{"language": "VARCHAR", "topics": ["VARCHAR"], "tags": ["VARCHAR"], "summary": "VARCHAR"}'
        ) as output,
        error
    from enrich.llm_cache
    where model = $model and prompt_version = $prompt_version
)

select
    r.item_id::varchar as item_id,
    r.item_type::varchar as item_type,
    coalesce(a.status, 'pending') as status,
    a.output.topics as topics,
    a.output.tags as tags,
    a.output.summary as summary,
    a.output.language as language,
    $model::varchar as model,
    $prompt_version::varchar as prompt_version,
    r.input_hash::varchar as input_hash,
    a.error
from requested as r
left join answers as a on r.input_hash = a.input_hash
order by r.item_id
