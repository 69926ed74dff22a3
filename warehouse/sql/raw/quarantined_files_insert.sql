-- Files left out whole (unreadable, empty, of another schema, undecodable), one row each; the caller has
-- deleted the rows of the batch's partitions, so a replaced file's row goes with its re-ingestion.
insert into raw.quarantined_files
select
    unnest($arrival_dates::date[]) as arrival_date,
    unnest($source_files::varchar[]) as source_file,
    unnest($sizes::bigint[]) as size_bytes,
    unnest($formats::varchar[]) as format,
    unnest($reasons::varchar[]) as reason,
    now()::timestamp as quarantined_at
