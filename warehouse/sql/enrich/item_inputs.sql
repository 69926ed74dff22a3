-- Items the LLM labels: every catalogue item of the given types, most listened first (the budget's order).
select
    i.item_id,
    i.item_type,
    i.title,
    i.description,
    i.creator,
    i.genres,
    coalesce(s.count_listeners, 0) as count_listeners
from raw.items as i
left join features.item_stats as s on i.item_id = s.item_id
where i.item_type in (select unnest($item_types::varchar[]))
order by count_listeners desc, i.item_id
