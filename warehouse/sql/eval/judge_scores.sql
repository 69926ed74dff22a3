-- One row per LLM judgement of the cohort and the validation panel (the registered relation `judged`), replacing
-- the last run's.
create or replace table eval.judge_scores as
select
    j.as_of::date as as_of,
    j.kind::varchar as kind,                 -- pointwise | pairwise | panel (the validation panel, pointwise) |
                                             -- panel_pairwise (the pairwise validation panel: users whose two
                                             -- lists hold different numbers of held-out items)
    j.user_id::varchar as user_id,
    j.item_id::varchar as item_id,           -- pointwise and panel: the judged item
    j.model::varchar as model,               -- pointwise: the model whose list held the item
    j.model_a::varchar as model_a,           -- pairwise and panel_pairwise: the pair, in a fixed order
    j.model_b::varchar as model_b,
    j."order"::varchar as "order",           -- pairwise: 'ab' shows model_a's list as A, 'ba' as B
    j.verdict::varchar as verdict,           -- aligned | not_aligned | A | B | tie; null unless status = 'ok'
    j.p_aligned::double as p_aligned,        -- pointwise and panel: P(aligned) from token log-probabilities, null
                                             -- when the backend returned none
    j.sbert_sim::double as sbert_sim,        -- pointwise and panel: cosine of the MiniLM profile and item vectors
    j.winner::varchar as winner,             -- pairwise: the model this order's verdict favours, or 'tie'
    j.final_winner::varchar as final_winner, -- pairwise: winner when both orders agree, else 'tie'
    j.confidence::varchar as confidence,     -- low | medium | high
    j.rationale::varchar as rationale,
    j.in_holdout::boolean as in_holdout,     -- pointwise: the user touched the item in the holdout period;
                                             -- panel: the positive (a held-out item) rather than the negative
    j.status::varchar as status,             -- ok | failed | pending (left by the call budget)
    j.llm_model::varchar as llm_model,
    j.prompt_version::varchar as prompt_version,
    j.input_hash::varchar as input_hash
from judged as j
order by j.user_id, j.kind, j.item_id, j.model_a, j.model_b, j."order"
