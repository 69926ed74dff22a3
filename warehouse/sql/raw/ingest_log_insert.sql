-- One row per ingestion of an arrival partition: its accounting and the fingerprint of its files.
insert into raw.ingest_log (
    arrival_date, ingested_at, count_files, count_read, count_accepted, count_rejected, count_duplicates,
    fingerprint, count_files_quarantined, count_duplicates_conflicting
)
values (
    $day, now()::timestamp, $files, $read, $accepted, $rejected, $duplicates, $fingerprint, $quarantined, $conflicting
)
