-- The text behind each vector of enrich.text_embeddings: every catalogue item (title, description, its topics,
-- and the LLM's tags where its topics are used) and every user with listening (facts, then the narrative where
-- it is used). What is used follows enrich.item_topics.topics_source and enrich.user_profiles.profile_source:
-- the LLM's output only when its kind passed tonight's quality floors (enrich.llm_quality), else the floor's.
with

items as (
    select
        'item' as entity,
        i.item_id as entity_id,
        concat_ws(
            '. ',
            coalesce(i.title, i.item_id),
            nullif(rtrim(trim(i.description), '.'), ''),
            'Topics: ' || nullif(array_to_string(
                t.topics || case when t.topics_source = 'llm' then
                    list_filter(coalesce(t.tags, []), tag -> not list_contains(t.topics, tag)) else []::varchar[] end,
                ', '
            ), '')
        ) as text
    from raw.items as i
    left join enrich.item_topics as t on i.item_id = t.item_id
),

narratives as (
    select
        user_id,
        from_json(profile_json, '{"listening_habits": "VARCHAR", "format_preference": "VARCHAR",
            "exploration_vs_specialization": "VARCHAR", "interests": ["VARCHAR"]}') as narrative
    from enrich.user_profiles
    where profile_source = 'llm'  -- the template's sentences say what the facts above already say; the
        -- narrative is read only where it is used
),

users as (
    select
        'user' as entity,
        p.user_id as entity_id,
        concat_ws(
            '. ',
            -- the encoder reads about 256 tokens of what a text means, so a user is their topics, then titles with
            -- their topics: plays by type and hours are in the towers' numeric features, and as words they pulled
            -- the sBERT-Sim judge's panel AUC down (0.675 without them, 0.658 with, on the demo world)
            'Topics: ' || nullif(array_to_string(p.top_topics, ', '), ''),
            'Listened to: ' || array_to_string(list_transform(p.top_items[1:10], item -> item.title
                || coalesce(' (' || nullif(array_to_string(item.topics, ', '), '') || ')', '')), '; '),
            'Interests: ' || nullif(array_to_string(n.narrative.interests, ', '), ''),
            n.narrative.listening_habits,
            n.narrative.format_preference,
            n.narrative.exploration_vs_specialization
        ) as text
    from enrich.user_profiles as p
    left join narratives as n on p.user_id = n.user_id
    where p.status <> 'no_activity'
)

select * from items
union all
select * from users
order by entity, entity_id
