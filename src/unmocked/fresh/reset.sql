-- unmocked: lets a used pg_url database be put back to its template's state in place.
--
-- Run once, in the copy of the template that pg_url databases are cloned from (never in the
-- template itself, so rollback tests pay nothing for it); see unmocked/fresh/reset.py for what
-- it holds and why. Databases prepared from an older text of this file are never reused: the
-- copy's cache key is a digest of this text.
CREATE SCHEMA unmocked_reset;
COMMENT ON SCHEMA unmocked_reset IS
  'unmocked: puts this pg_url database back to its template''s state between tests';
GRANT USAGE ON SCHEMA unmocked_reset TO PUBLIC;

CREATE TABLE unmocked_reset.written (relid oid NOT NULL);
CREATE INDEX ON unmocked_reset.written (relid);
CREATE TABLE unmocked_reset.schema_changed (command text);
GRANT SELECT, INSERT ON unmocked_reset.written, unmocked_reset.schema_changed TO PUBLIC;

-- What reset needs: per table, how to empty it and how to put the template's rows back.
CREATE TABLE unmocked_reset.tables (relid oid PRIMARY KEY, empty text NOT NULL, refill text);
-- Which tables a write to a table may change: itself, its inheritance children and partitions, and
-- tables whose foreign keys have ON DELETE / ON UPDATE actions on it, transitively.
CREATE TABLE unmocked_reset.reaches (written oid NOT NULL, touched oid NOT NULL);
CREATE INDEX ON unmocked_reset.reaches (written);
CREATE TABLE unmocked_reset.sequences (seqid regclass, last_value bigint, is_called boolean);
CREATE TABLE unmocked_reset.facts (cannot_reset text);

CREATE FUNCTION unmocked_reset.note_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM unmocked_reset.written WHERE relid = TG_RELID) THEN
    INSERT INTO unmocked_reset.written VALUES (TG_RELID);
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION unmocked_reset.note_schema_change() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  -- A concurrent index build commits its first transaction before it can fail and leave an
  -- invalid index behind, which ddl_command_end never hears of: note its start (ends in RETURN).
  IF TG_EVENT = 'ddl_command_start' THEN
    INSERT INTO unmocked_reset.schema_changed VALUES (TG_TAG);
    RETURN;
  END IF;
  -- Temporary objects go with the session that made them, and reset ends every session.
  IF TG_EVENT = 'sql_drop' THEN
    IF NOT EXISTS (SELECT FROM pg_event_trigger_dropped_objects() WHERE NOT is_temporary) THEN
      RETURN;
    END IF;
  ELSIF TG_TAG LIKE 'DROP %' THEN
    RETURN;  -- reported, with what it dropped, by sql_drop
  ELSIF EXISTS (SELECT FROM pg_event_trigger_ddl_commands())
    AND NOT EXISTS (SELECT FROM pg_event_trigger_ddl_commands()
                    WHERE schema_name IS NULL OR schema_name !~ '^pg_(toast_)?temp') THEN
    RETURN;
  END IF;
  INSERT INTO unmocked_reset.schema_changed VALUES (TG_TAG);
END $$;

DO $$
DECLARE
  rel record;
  columns text;
  has_rows boolean;
  copy text;
BEGIN
  FOR rel IN
    SELECT c.oid, c.oid::regclass::text AS name, c.relkind
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'unmocked_reset')
       AND n.nspname !~ '^pg_toast'
  LOOP
    EXECUTE format('CREATE TRIGGER unmocked_note_write AFTER INSERT OR UPDATE OR DELETE OR '
                   'TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION '
                   'unmocked_reset.note_write()', rel.name);
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER unmocked_note_write', rel.name);
    CONTINUE WHEN rel.relkind = 'p';  -- rows live in the partitions, each a table of its own
    -- Stored generated columns are computed again on insert; dropped ones are not there.
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
      FROM pg_attribute
     WHERE attrelid = rel.oid AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    EXECUTE format('SELECT EXISTS (SELECT FROM ONLY %s)', rel.name) INTO STRICT has_rows;
    IF has_rows THEN
      copy := format('unmocked_reset.%I', 'rows_' || rel.oid);
      EXECUTE format('CREATE TABLE %s AS SELECT %s FROM ONLY %s', copy, columns, rel.name);
      -- OVERRIDING SYSTEM VALUE: GENERATED ALWAYS identity columns get their template values.
      copy := format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT * FROM %s',
                     rel.name, columns, copy);
    ELSE
      copy := NULL;
    END IF;
    INSERT INTO unmocked_reset.tables
      VALUES (rel.oid, format('DELETE FROM ONLY %s', rel.name), copy);
  END LOOP;

  FOR rel IN
    SELECT c.oid::regclass AS seqid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind = 'S' AND c.relpersistence <> 't' AND n.nspname <> 'unmocked_reset'
  LOOP
    EXECUTE format('INSERT INTO unmocked_reset.sequences SELECT %L::regclass, last_value, '
                   'is_called FROM %s', rel.seqid, rel.seqid);
  END LOOP;

  INSERT INTO unmocked_reset.reaches
    WITH RECURSIVE edges(parent, child) AS (
      SELECT inhparent, inhrelid FROM pg_inherits
      UNION ALL
      SELECT confrelid, conrelid FROM pg_constraint
       WHERE contype = 'f' AND (confdeltype NOT IN ('a', 'r') OR confupdtype NOT IN ('a', 'r'))
    ), closure(written, touched) AS (
      SELECT tgrelid, tgrelid FROM pg_trigger WHERE tgname = 'unmocked_note_write'
      UNION
      SELECT closure.written, edges.child FROM closure JOIN edges ON edges.parent = closure.touched
    )
    SELECT written, touched FROM closure;

  INSERT INTO unmocked_reset.facts VALUES (
    CASE
      WHEN EXISTS (SELECT FROM pg_largeobject_metadata)
        THEN 'its template holds large objects, which a test may change in place'
      WHEN EXISTS (SELECT FROM pg_trigger WHERE NOT tgisinternal AND tgenabled IN ('A', 'R')
                     AND tgname <> 'unmocked_note_write')
        THEN 'a trigger of the schema is ENABLE ALWAYS or REPLICA, so it would act during reset'
      WHEN EXISTS (SELECT FROM pg_rewrite WHERE ev_type <> '1' AND ev_enabled IN ('A', 'R'))
        THEN 'a rule of the schema is ENABLE ALWAYS or REPLICA, so it would act during reset'
    END
  );
END $$;

CREATE FUNCTION unmocked_reset.reset() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  facts unmocked_reset.facts;
  statement record;
BEGIN
  SELECT * INTO STRICT facts FROM unmocked_reset.facts;
  IF facts.cannot_reset IS NOT NULL THEN
    RETURN facts.cannot_reset;
  ELSIF EXISTS (SELECT FROM unmocked_reset.schema_changed) THEN
    RETURN 'the schema changed';
  ELSIF (SELECT count(*) FROM pg_event_trigger
          WHERE evtname LIKE 'unmocked\_%' AND evtenabled = 'A') <> 3 THEN
    -- (Dropping or disabling a trigger on a table is DDL, which they note.)
    RETURN 'an event trigger of unmocked was dropped or disabled';
  END IF;

  SET LOCAL session_replication_role = replica;
  FOR statement IN
    SELECT tables.empty, tables.refill FROM unmocked_reset.tables
     WHERE relid IN (SELECT touched FROM unmocked_reset.reaches
                      WHERE written IN (SELECT relid FROM unmocked_reset.written))
  LOOP
    EXECUTE statement.empty;
    IF statement.refill IS NOT NULL THEN
      EXECUTE statement.refill;
    END IF;
  END LOOP;
  PERFORM setval(seqid, last_value, is_called) FROM unmocked_reset.sequences;
  PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
  DELETE FROM unmocked_reset.written;
  RETURN NULL;
END $$;

CREATE EVENT TRIGGER unmocked_ddl ON ddl_command_end
  EXECUTE FUNCTION unmocked_reset.note_schema_change();
CREATE EVENT TRIGGER unmocked_index ON ddl_command_start WHEN TAG IN ('CREATE INDEX', 'DROP INDEX')
  EXECUTE FUNCTION unmocked_reset.note_schema_change();
CREATE EVENT TRIGGER unmocked_drop ON sql_drop
  EXECUTE FUNCTION unmocked_reset.note_schema_change();
ALTER EVENT TRIGGER unmocked_ddl ENABLE ALWAYS;
ALTER EVENT TRIGGER unmocked_drop ENABLE ALWAYS;
ALTER EVENT TRIGGER unmocked_index ENABLE ALWAYS;
