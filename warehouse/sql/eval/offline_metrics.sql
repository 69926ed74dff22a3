-- Offline metrics of every model by split and slice; reads the registered relation
-- metrics_frame(split, model, slice, metric, value, std_error, users). split 'valid' holds the figures every
-- choice read (recorded by models/two_tower), 'holdout' the ones scored once, after the choices.
create or replace table eval.offline_metrics as
select
    m.split::varchar as split,
    m.model::varchar as model,
    m.slice::varchar as slice,
    m.metric::varchar as metric,
    m.value::double as value,
    m.std_error::double as std_error,
    m.users::bigint as users,
    $as_of::date as as_of,
    $model_version::varchar as model_version  -- the bundled 2T-HGNN evaluated beside the baselines
from metrics_frame as m
