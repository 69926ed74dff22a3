-- Re-running a partition replaces exactly its staged rows.
delete from serving.candidates_staging where as_of = $as_of::date
