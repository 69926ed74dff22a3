-- One row per item of the graph and target types: floor topics (taxonomy or zero-shot, never missing), the LLM's
-- answer from enrich.llm_cache where there is one, and `topics`, what downstream reads (embedding text, tower
-- features, the profile facts): the LLM's when its answer is ok and the item_topics kind passed its quality floors
-- tonight (enrich.llm_quality.is_used), else the floor's. topics_source says which, topics_reason why.
-- LLM status: ok | failed | pending (the budget has not reached it, or its endpoint failed). Reads the registered
-- relation requested(item_id, item_type, input_hash, floor_topics, floor_source, floor_hash, last_attempted_at).
create or replace table enrich.item_topics as
with

answers as (
    select
        input_hash,
        status,
        from_json(
            output_json, '{"topics": ["VARCHAR"], "tags": ["VARCHAR"], "language": "VARCHAR", "summary": "VARCHAR"}'
        ) as output,
        error
    from enrich.llm_cache
    where model = $model and prompt_version = $prompt_version
),

quality as (
    -- no rows for this model and prompt version: not measured, so not used
    select
        coalesce(bool_and(is_used), false) as is_kind_used,
        string_agg(metric || ' ' || reason, '; ' order by metric) filter (where not passed) as failed_reasons
    from enrich.llm_quality
    where kind = 'item_topics' and model = $model and prompt_version = $prompt_version
),

joined as (
    select
        r.*,
        coalesce(a.status, 'pending') as status,
        a.output,
        a.error as llm_error,
        coalesce(a.status = 'ok' and len(a.output.topics) > 0, false) as is_answer_ok,
        q.is_kind_used,
        q.failed_reasons
    from requested as r
    left join answers as a on r.input_hash = a.input_hash
    cross join quality as q
),

chosen as (
    select
        *,
        is_answer_ok and is_kind_used as is_llm_used,
        case
            when is_answer_ok and is_kind_used then 'LLM answer used: item topics passed their quality floors'
            when is_answer_ok then 'floor used: LLM item topics failed quality: '
                || coalesce(failed_reasons, 'not measured')
            when status = 'failed' then 'floor used: the LLM answer failed schema validation'
            else 'floor used: no LLM answer yet (left to a later run)'
        end as topics_reason
    from joined
)

select
    item_id::varchar as item_id,
    item_type::varchar as item_type,
    status,
    case when is_llm_used then output.topics else floor_topics end::varchar[] as topics,
    case when is_llm_used then 'llm' else floor_source end::varchar as topics_source,
    topics_reason::varchar as topics_reason,
    floor_topics::varchar[] as floor_topics,
    floor_source::varchar as floor_source,
    output.topics as llm_topics,
    output.tags as tags,
    output.summary as summary,
    output.language as language,
    $model::varchar as model,
    $prompt_version::varchar as prompt_version,
    input_hash::varchar as input_hash,
    floor_hash::varchar as floor_hash,
    last_attempted_at::timestamp as last_attempted_at,  -- UTC; the least recently attempted are asked first
    llm_error as error
from chosen
order by item_id
