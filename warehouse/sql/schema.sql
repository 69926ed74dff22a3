-- Every crossfade table, created empty when missing. Stages replace or fill them; readers may rely on
-- these columns and types (README "Tables").
create schema if not exists raw;
create schema if not exists features;
create schema if not exists enrich;
create schema if not exists models;
create schema if not exists eval;
create schema if not exists serving;

create table if not exists raw.events (
    event_id varchar not null,
    user_id varchar not null,
    item_id varchar not null,
    ts timestamp not null,             -- UTC
    event_date date not null,          -- date of ts: late events live under the day they happened
    event_type varchar not null,
    ms_played bigint not null,
    context varchar,
    country varchar,
    arrival_date date not null,        -- landing partition (events/date=...) the row came from
    source_file varchar not null,
    source_line bigint not null        -- 1-based line (JSONL, CSV) or row number (Parquet)
);

create table if not exists raw.rejected_events (
    arrival_date date not null,
    source_file varchar not null,
    source_line bigint,
    reason varchar not null,
    event_id varchar,
    raw_record varchar                 -- the row as read, for a person to inspect
);

create table if not exists raw.ingest_log (
    arrival_date date not null,
    ingested_at timestamp not null,
    count_files integer not null,
    count_read bigint not null,
    count_accepted bigint not null,
    count_rejected bigint not null,
    count_duplicates bigint not null,  -- exact repeats and conflicting duplicates
    fingerprint varchar not null,     -- file names, sizes and mtimes: a change means re-ingest
    count_files_quarantined integer default 0,      -- counted in count_files, their records not in count_read
    count_duplicates_conflicting bigint default 0   -- of count_duplicates: same event_id, another payload
);
-- warehouses made before these columns existed gain them (0 for the partitions they logged)
alter table raw.ingest_log add column if not exists count_files_quarantined integer default 0;
alter table raw.ingest_log add column if not exists count_duplicates_conflicting bigint default 0;

create table if not exists raw.quarantined_files (
    arrival_date date not null,        -- partition of the file; re-ingesting it replaces these rows
    source_file varchar not null,
    size_bytes bigint not null,
    format varchar not null,           -- jsonl, csv or parquet, with .gz when compressed
    reason varchar not null,           -- unreadable | empty | wrong_schema | undecodable: detail
    quarantined_at timestamp not null
);

create table if not exists raw.items (
    item_id varchar not null,
    item_type varchar not null,
    title varchar,
    description varchar,
    creator varchar,
    language varchar,
    genres varchar[],
    duration_ms bigint,
    release_date date,
    is_paid boolean,
    source_file varchar not null
);

create table if not exists raw.users (
    user_id varchar not null,
    country varchar,
    age_bucket varchar,
    signup_date date,
    plan varchar,
    source_file varchar not null
);

create table if not exists raw.rejected_records (
    entity varchar not null,           -- item | user
    source_file varchar not null,
    source_line bigint,
    reason varchar not null,
    raw_record varchar
);
