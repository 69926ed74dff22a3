-- HGNN item vectors of the latest training run; reads the registered relation hgnn_vectors(item_id, item_type, embedding).
create or replace table models.hgnn_item_embeddings as
select
    v.item_id::varchar as item_id,
    v.item_type::varchar as item_type,
    v.embedding::float[] as embedding,
    $model_version::varchar as model_version
from hgnn_vectors as v
order by v.item_id
