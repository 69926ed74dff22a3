-- Item pairs of the graph types consumed by the same users in the train period, each pair once.
-- Each user contributes at most $max_items_per_user items (their most engaged), so a heavy user adds
-- at most n(n-1)/2 pairs instead of exploding the self-join. Pairs are joined, counted and sorted as
-- integers (item numbers in item_id order) and named only at the end: half the time of string keys.
create or replace table features.co_listen_edges as
with

graph_items as (
    select i.item_id, i.item_type, cast(row_number() over (order by i.item_id) as integer) as item_no
    from raw.items as i
    where list_contains($graph_types::varchar[], i.item_type)
),

names as (
    -- Indexed by item_no: naming a pair is two list lookups, not two joins on millions of rows.
    select list(g.item_id order by g.item_no) as item_ids, list(g.item_type order by g.item_no) as item_types
    from graph_items as g
),

user_items as (
    select t.user_id, g.item_no
    from features.interactions as t
    inner join graph_items as g on t.item_id = g.item_id
    where t.period = 'train'
        and (t.is_played or t.is_saved or t.is_followed or t.is_previewed or t.is_purchased)  -- a skip alone is no co-listen
    qualify row_number() over (
        partition by t.user_id order by t.count_events desc, t.ms_played_total desc, t.item_id
    ) <= $max_items_per_user
),

pair_counts as (
    -- One BIGINT per pair, the smaller item_no in the high half: ordering by it orders by (src, dst).
    select a.item_no::bigint * 4294967296 + b.item_no as pair_key, count(*) as co_listeners
    from user_items as a
    inner join user_items as b on a.user_id = b.user_id and a.item_no < b.item_no
    group by pair_key
    having count(*) >= $min_co_listeners
),

named as (
    select
        p.pair_key,
        n.item_ids[(p.pair_key >> 32)::integer] as src_item_id,
        n.item_ids[(p.pair_key & 4294967295)::integer] as dst_item_id,
        n.item_types[(p.pair_key >> 32)::integer] as src_type,
        n.item_types[(p.pair_key & 4294967295)::integer] as dst_type,
        p.co_listeners
    from pair_counts as p
    cross join names as n
)

select
    e.src_item_id,
    e.dst_item_id,
    e.src_type,
    e.dst_type,
    least(e.src_type, e.dst_type) || '__' || greatest(e.src_type, e.dst_type) as relation,
    e.co_listeners
from named as e
order by e.pair_key
