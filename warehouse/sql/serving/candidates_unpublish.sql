-- First half of a publish (same transaction as candidates_publish): the partition's old lists go.
delete from serving.candidates where as_of = $as_of::date
