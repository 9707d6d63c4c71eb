-- Users (zoo/missing_grant.py). Password hashes are for the login service alone: the app's role
-- is granted the other columns, one by one.
CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    email         text      NOT NULL UNIQUE,
    name          text      NOT NULL,
    password_hash text
);
GRANT SELECT (id, email, name), INSERT (email, name) ON users TO app_user;
GRANT USAGE ON SEQUENCE users_id_seq TO app_user;
