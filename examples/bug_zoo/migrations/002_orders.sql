-- The orders page (zoo/n_plus_one.py): customers and their orders.
CREATE TABLE customers (
    id   bigserial PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE orders (
    id          bigserial      PRIMARY KEY,
    customer_id bigint         NOT NULL REFERENCES customers,
    total       numeric(10, 2) NOT NULL
);
CREATE INDEX orders_customer_id ON orders (customer_id);
GRANT SELECT, INSERT ON customers, orders TO app_user;
GRANT USAGE ON SEQUENCE customers_id_seq, orders_id_seq TO app_user;
