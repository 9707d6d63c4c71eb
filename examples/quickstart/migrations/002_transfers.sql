-- Every transfer is recorded; the ledger must point at real accounts.
CREATE TABLE transfers (
    id          bigserial PRIMARY KEY,
    from_id     bigint NOT NULL REFERENCES accounts DEFERRABLE INITIALLY DEFERRED,
    to_id       bigint NOT NULL REFERENCES accounts DEFERRABLE INITIALLY DEFERRED,
    amount      numeric(12, 2) NOT NULL CHECK (amount > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transfers_from_id ON transfers (from_id);
