-- Offline metrics of every model by slice; reads the registered relation metrics_frame(model, slice, metric, value, std_error, users).
create or replace table eval.offline_metrics as
select
    m.model::varchar as model,
    m.slice::varchar as slice,
    m.metric::varchar as metric,
    m.value::double as value,
    m.std_error::double as std_error,
    m.users::bigint as users,
    $as_of::date as as_of,
    $model_version::varchar as model_version  -- the bundled 2T-HGNN evaluated beside the baselines
from metrics_frame as m
