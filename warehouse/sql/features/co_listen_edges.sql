-- Item pairs of the graph types consumed by the same users in the train period, each pair once.
-- Each user contributes at most $max_items_per_user items (their most engaged), so a heavy user adds
-- at most n(n-1)/2 pairs instead of exploding the self-join.
create or replace table features.co_listen_edges as
with

user_items as (
    select t.user_id, t.item_id, t.item_type
    from features.interactions as t
    where t.period = 'train' and list_contains($graph_types::varchar[], t.item_type)
        and (t.is_played or t.is_saved or t.is_followed or t.is_previewed or t.is_purchased)  -- a skip alone is no co-listen
    qualify row_number() over (
        partition by t.user_id order by t.count_events desc, t.ms_played_total desc, t.item_id
    ) <= $max_items_per_user
),

pairs as (
    select a.item_id as src_item_id, b.item_id as dst_item_id, a.item_type as src_type, b.item_type as dst_type
    from user_items as a
    inner join user_items as b on a.user_id = b.user_id and a.item_id < b.item_id
)

select
    p.src_item_id,
    p.dst_item_id,
    any_value(p.src_type) as src_type,
    any_value(p.dst_type) as dst_type,
    least(any_value(p.src_type), any_value(p.dst_type)) || '__' || greatest(any_value(p.src_type), any_value(p.dst_type)) as relation,
    count(*) as co_listeners
from pairs as p
group by p.src_item_id, p.dst_item_id
having count(*) >= $min_co_listeners
order by p.src_item_id, p.dst_item_id
