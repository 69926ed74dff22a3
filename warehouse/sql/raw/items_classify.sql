-- Give each bad catalogue record its reason; good ones keep a null reason.
update _items_stage set reason = case
    when parse_error is not null then parse_error
    when nullif(trim(item_id), '') is null then 'missing_field: item_id'
    when nullif(trim(item_type), '') is null then 'missing_field: item_type'
    when lower(trim(item_type)) not in (select unnest($item_types::varchar[])) then 'unknown_item_type'
    when duration_ms is not null and coalesce(try_cast(duration_ms as bigint), -1) < 0 then 'bad_duration_ms'
    when release_date is not null and try_cast(release_date as date) is null then 'bad_release_date'
    when genres is not null and starts_with(trim(genres), '[') and not json_valid(genres) then 'bad_genres'
end
