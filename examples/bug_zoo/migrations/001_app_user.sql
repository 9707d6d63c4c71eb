-- app_user: the role the application runs as in production, holding only what the migrations
-- below grant it. The tests run as it too (unmocked_role in pyproject.toml), so a privilege it
-- lacks or a row-level security policy that hides rows fails a test instead of a deploy.
-- A role belongs to the whole server, not to one database: an earlier build of this template,
-- or another project on the same server, may have made it already.
DO $$
BEGIN
    CREATE ROLE app_user NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN  -- made before, or by a build at this moment
        NULL;
END
$$;
GRANT USAGE ON SCHEMA public TO app_user;
