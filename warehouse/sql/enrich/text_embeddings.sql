-- Keep one vector per current entity: drop the vectors of entities that are gone or were encoded again, then add
-- the new ones (an entity whose changed text waits for a later run keeps its old vector). Reads the registered relations current_inputs(entity, entity_id) and
-- encoded(entity, entity_id, model, dim, input_hash, embedding).
create table if not exists enrich.text_embeddings (
    entity varchar not null,           -- item | user
    entity_id varchar not null,
    model varchar not null,
    dim integer not null,
    input_hash varchar not null,       -- of the model name and the text: a change means encode again
    embedding float[] not null,        -- unit length
    encoded_at timestamp               -- when the text was encoded; the longest-stale are re-encoded first
);
alter table enrich.text_embeddings add column if not exists encoded_at timestamp;  -- tables from before it

delete from enrich.text_embeddings as t
where not exists (select 1 from current_inputs as c where c.entity = t.entity and c.entity_id = t.entity_id)
    or exists (select 1 from encoded as e where e.entity = t.entity and e.entity_id = t.entity_id);

insert into enrich.text_embeddings (entity, entity_id, model, dim, input_hash, embedding, encoded_at)
select entity, entity_id, model, dim::integer, input_hash, embedding::float[], now()::timestamp
from encoded;
