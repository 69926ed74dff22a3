-- The judge's validity on one as-of date (the registered relation `validation`), replacing the last run's: per
-- judge, ROC-AUC on the validation panel (metric 'auc': a held-out positive and an unconsumed released negative
-- per panel user; 'auc_reference': sBERT-Sim on the larger reference panel the LLM's panel is drawn from) and,
-- per model pair, agreement with holdout hits (metric 'agreement': the share of decided judgements naming the
-- list with more held-out items). models/judge_panel.py computes them.
create or replace table eval.judge_validation as
select
    $as_of::date as as_of,
    v.judge::varchar as judge,              -- llm | sbert_sim (cosine of the MiniLM profile and item text vectors)
    v.metric::varchar as metric,            -- auc | auc_reference | agreement
    v.model_a::varchar as model_a,          -- agreement: the pair compared; null for auc
    v.model_b::varchar as model_b,
    v.scored_by::varchar as scored_by,      -- auc: p_aligned | verdict | cosine; agreement: each_order | mean_cosine
    v.value::double as value,               -- the AUC or the agreement; null when nothing was scored
    v.ci_low::double as ci_low,             -- 95% percentile interval, users resampled with the run's seed
    v.ci_high::double as ci_high,
    v.pairs::bigint as pairs,               -- auc: (positive, negative) pairs scored; agreement: decided judgements
    v.users::bigint as users,               -- auc: panel users; agreement: users judged on the pair
    v.informative::boolean as informative   -- the interval excludes 0.5 on at least 10 pairs; null if not measured
from validation as v
order by v.metric, v.model_a nulls first, v.model_b, v.judge
