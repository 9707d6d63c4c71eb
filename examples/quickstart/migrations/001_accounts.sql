-- Accounts hold money; a balance may never go negative.
CREATE TABLE accounts (
    id         bigserial PRIMARY KEY,
    owner      text        NOT NULL UNIQUE,
    balance    numeric(12, 2) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    tags       text[]      NOT NULL DEFAULT '{}',
    profile    jsonb       NOT NULL DEFAULT '{}'
);
