-- JSON validity is measured on every stored answer of the current model and prompt version: ok (parsed against
-- the schema) or failed (did not, after every attempt).
select status
from enrich.llm_cache
where model = $model and prompt_version = $prompt_version
