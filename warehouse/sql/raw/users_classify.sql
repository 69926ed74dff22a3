-- Give each bad user record its reason; good ones keep a null reason.
update _users_stage set reason = case
    when parse_error is not null then parse_error
    when nullif(trim(user_id), '') is null then 'missing_field: user_id'
    when signup_date is not null and try_cast(signup_date as date) is null then 'bad_signup_date'
end
