-- One row per user: the SQL facts (columns and UserFacts JSON), the template profile written from them (the floor,
-- every active user), the LLM narrative where the cache holds a valid one for the user's signature, and
-- profile_json, what downstream reads (the profile embedding text, the judge's profile): the narrative when it is
-- ok and usable and the user_profiles kind passed its quality floors tonight (enrich.llm_quality.is_used), else
-- the template. profile_source says which, profile_reason why. Status of the narrative: ok | failed | pending
-- (not reached yet) | no_activity (nothing to describe). Reads the registered relations user_facts
-- (enrich/user_facts.sql) and requested(user_id, input_hash, signature, template_json, is_narrative_usable,
-- last_attempted_at).
create or replace table enrich.user_profiles as
with

answers as (
    select input_hash, status, output_json, error
    from enrich.llm_cache
    where model = $model and prompt_version = $prompt_version
),

quality as (
    -- no rows for this model and prompt version: not measured, so not used
    select
        coalesce(bool_and(is_used), false) as is_kind_used,
        string_agg(metric || ' ' || reason, '; ' order by metric) filter (where not passed) as failed_reasons
    from enrich.llm_quality
    where kind = 'user_profiles' and model = $model and prompt_version = $prompt_version
),

joined as (
    select
        f.*,
        r.user_id is not null as is_requested,
        r.input_hash,
        r.signature,
        r.template_json,
        r.last_attempted_at,
        a.status as llm_status,
        a.output_json,
        a.error,
        coalesce(a.status = 'ok' and r.is_narrative_usable, false) as is_narrative_ok,
        is_narrative_ok and q.is_kind_used as is_llm_used,  -- DuckDB reads the alias just defined
        q.is_kind_used,
        q.failed_reasons
    from user_facts as f
    left join requested as r on f.user_id = r.user_id
    left join answers as a on r.input_hash = a.input_hash
    cross join quality as q
),

chosen as (
    select
        *,
        case when is_llm_used then output_json else template_json end as profile_json,
        case when is_llm_used then 'llm' when is_requested then 'template' end as profile_source,
        case
            when not is_requested then null
            when is_llm_used then 'LLM narrative used: user profiles passed their quality floors'
            when is_narrative_ok then 'template used: LLM user profiles failed quality: '
                || coalesce(failed_reasons, 'not measured')
            when llm_status = 'ok' then 'template used: the narrative is not usable '
                || '(a key empty or no sentence, or one text in most keys)'
            when llm_status = 'failed' then 'template used: the LLM answer failed schema validation'
            else 'template used: no LLM narrative yet (left to a later run)'
        end as profile_reason
    from joined
)

select
    user_id::varchar as user_id,
    case when not is_requested then 'no_activity' else coalesce(llm_status, 'pending') end as status,
    is_active,
    count_events,
    active_days,
    plays_per_active_day,
    peak_time_of_day,
    type_shares,
    top_topics,
    top_items,
    facts_json,
    profile_source::varchar as profile_source,
    profile_reason::varchar as profile_reason,
    profile_json::varchar as profile_json,
    from_json(profile_json, '{"interests": ["VARCHAR"]}').interests as interests,
    template_json::varchar as template_json,
    output_json::varchar as narrative_json,
    case when is_requested then $model::varchar end as model,
    case when is_requested then $prompt_version::varchar end as prompt_version,
    input_hash::varchar as input_hash,
    signature::varchar as signature,
    last_attempted_at::timestamp as last_attempted_at,  -- UTC; the least recently attempted are asked first
    error
from chosen
order by user_id
