-- The LLM's measured quality, one row per output kind and metric (models/llm_quality.py): the value, the answers
-- it was measured on, the floor, whether it passed, and the kind's decision (is_used: every metric of the kind
-- passed, so enrich.item_topics.topics or enrich.user_profiles.profile_json read the LLM's output). Each enrich
-- asset replaces only its own kind's rows. Reads the registered relation measured (models.llm_quality.SCHEMA).
create table if not exists enrich.llm_quality (
    kind varchar not null,             -- item_topics | user_profiles
    metric varchar not null,           -- topic_accuracy | profile_faithfulness | json_validity
    value double,                      -- a share in [0, 1]; null when there was nothing to measure
    count_answers bigint not null,     -- answers the value is measured on
    min_answers bigint not null,       -- fewer answers than this: not judged, so not passed
    floor double not null,             -- the configured floor (llm_min_* settings)
    passed boolean not null,           -- count_answers >= min_answers and value >= floor
    is_used boolean not null,          -- the kind's decision: every metric of the kind passed
    reason varchar not null,
    model varchar not null,
    prompt_version varchar not null,
    measured_at timestamp not null     -- UTC; one row per (kind, metric)
);

delete from enrich.llm_quality where kind in (select kind from measured);

insert into enrich.llm_quality by name
select * from measured;
