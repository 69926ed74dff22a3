-- One row per trained model version: what it was trained on, how it scored, and where it stands.
create schema if not exists models;
create table if not exists models.registry (
    model_version varchar not null,        -- unique: the registry gate checks it
    model_name varchar not null,           -- two_tower_hgnn
    created_at timestamp not null,
    as_of date not null,
    train_start timestamp,                 -- the period the model learned from
    train_end timestamp,
    config json not null,
    metrics json not null,                 -- {slice: {metric: value}}, plus the gate's reference numbers
    checkpoint_dir varchar not null,       -- ModelBundle.save folder
    status varchar not null,               -- candidate | promoted | rejected | retired (the registry gate checks)
    reason varchar,                        -- why it was rejected or retired
    promoted_at timestamp
);
