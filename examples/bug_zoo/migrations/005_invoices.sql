-- The invoices of every tenant in one table (zoo/row_level_security.py). Row-level security
-- shows a transaction only the rows of the tenant it names: set_config('app.tenant', '7', true).
-- No policy applies to a superuser, nor to the table's owner (the role that ran this file)
-- unless the table says FORCE ROW LEVEL SECURITY: app_user is neither.
CREATE TABLE invoices (
    id        bigserial      PRIMARY KEY,
    tenant_id integer        NOT NULL,
    amount    numeric(10, 2) NOT NULL
);
ALTER TABLE invoices ENABLE ROW LEVEL SECURITY;
-- No tenant named (never set, or '' once the transaction that set it ended): no rows.
CREATE POLICY tenant_isolation ON invoices
    USING (tenant_id = nullif(current_setting('app.tenant', true), '')::integer);
GRANT SELECT, INSERT ON invoices TO app_user;
GRANT USAGE ON SEQUENCE invoices_id_seq TO app_user;
