-- Stock by SKU (zoo/connection_leak.py).
CREATE TABLE stock (
    sku      text    PRIMARY KEY,
    quantity integer NOT NULL CHECK (quantity >= 0)
);
GRANT SELECT, INSERT ON stock TO app_user;
