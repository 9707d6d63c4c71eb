-- Receipts, found by the address they were mailed to (zoo/missing_index.py). Addresses are
-- stored in lower case, so the index on email serves a lookup of the lowered address.
CREATE TABLE receipts (
    id    bigserial      PRIMARY KEY,
    email text           NOT NULL CHECK (email = lower(email)),
    total numeric(10, 2) NOT NULL
);
CREATE INDEX receipts_email ON receipts (email);
GRANT SELECT, INSERT ON receipts TO app_user;
GRANT USAGE ON SEQUENCE receipts_id_seq TO app_user;
