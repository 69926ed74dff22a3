-- Candidate lists: staged per as-of date by the candidate step, copied to serving.candidates once the gate passed.
create table if not exists serving.candidates_staging (
    user_id varchar not null,
    item_id varchar not null,
    rank integer not null,             -- 1 = best
    score float not null,              -- model dot product, or fallback tier + popularity percentile
    explanation varchar not null,
    as_of date not null,               -- the lists use events strictly before this date
    is_fallback boolean not null,      -- popularity within the user's language and genre, not the model
    model_version varchar not null,
    model varchar                      -- the model that made the row: the serving plan's for the user's slice, or 'fallback'
);

create table if not exists serving.candidates (
    user_id varchar not null,
    item_id varchar not null,
    rank integer not null,
    score float not null,
    explanation varchar not null,
    as_of date not null,
    is_fallback boolean not null,
    model_version varchar not null,
    model varchar
);

-- Warehouses made before the serving plan lack the model column; their older rows keep it null.
alter table serving.candidates_staging add column if not exists model varchar;
alter table serving.candidates add column if not exists model varchar;
