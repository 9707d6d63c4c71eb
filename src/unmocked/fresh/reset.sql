-- unmocked: lets a used pg_url database be put back to its template's state in place.
--
-- Run once, in the copy of the template that pg_url databases are cloned from (never in the
-- template itself, so rollback tests pay nothing for it); see unmocked/fresh/reset.py for what
-- it holds and why. Databases prepared from an older text of this file are never reused: the
-- copy's cache key is a digest of this text and of the mode.
--
-- The mode comes from two settings the caller makes first (reset.py, ResetMachinery.apply):
--   unmocked_reset.watch    'events': event triggers note schema changes (a superuser's);
--                           'catalogs': the reset reads the catalogs for them (any owner's);
--   unmocked_reset.replica  'on' when the role may SET session_replication_role, so that
--                           neither foreign keys nor the user's triggers act during the reset;
--                           'off': tables are emptied children first and refilled parents
--                           first, the user's triggers switched off by name meanwhile.
CREATE SCHEMA unmocked_reset;
COMMENT ON SCHEMA unmocked_reset IS
  'unmocked: puts this pg_url database back to its template''s state between tests';
GRANT USAGE ON SCHEMA unmocked_reset TO PUBLIC;

CREATE TABLE unmocked_reset.written (relid oid NOT NULL);
CREATE INDEX ON unmocked_reset.written (relid);
CREATE TABLE unmocked_reset.schema_changed (command text);
GRANT SELECT, INSERT ON unmocked_reset.written, unmocked_reset.schema_changed TO PUBLIC;

-- What reset needs: per table, how to empty it and how to put the template's rows back.
CREATE TABLE unmocked_reset.tables (
  relid oid PRIMARY KEY,
  empty text NOT NULL,  -- deletes its rows (with replica off, only those the template lacks)
  restore text,  -- with replica off: updates rows back to the template's values
  refill text,  -- inserts the template's rows (with replica off, those missing)
  rank int NOT NULL DEFAULT 0,  -- its depth below the tables it references (replica off)
  switch_off text, switch_on text  -- the user's triggers on it, by name (replica off)
);
-- Which tables a write to a table may change: itself, its inheritance children and partitions, and
-- tables whose foreign keys have ON DELETE / ON UPDATE actions on it, transitively.
CREATE TABLE unmocked_reset.reaches (written oid NOT NULL, touched oid NOT NULL);
CREATE INDEX ON unmocked_reset.reaches (written);
-- Every table's rank, partitioned ones too (their partitions reference and are referenced).
CREATE TABLE unmocked_reset.ranks (relid oid PRIMARY KEY, rank int NOT NULL);
CREATE TABLE unmocked_reset.sequences (seqid regclass, last_value bigint, is_called boolean);
CREATE TABLE unmocked_reset.facts (
  cannot_reset text,
  watch text NOT NULL DEFAULT current_setting('unmocked_reset.watch'),
  replica boolean NOT NULL DEFAULT current_setting('unmocked_reset.replica')::boolean,
  watermark xid,  -- the last transaction that reset it (or installed this): catalogs' rows
                  -- written since have a newer xmin
  catalog_check text  -- 'catalogs': the query naming a catalog that changed since watermark
);
-- 'catalogs': rows per catalog at the watermark, and what of each relation a TRUNCATE, CLUSTER
-- or REFRESH leaves alone (all but its storage), to tell such an update from a schema change.
CREATE TABLE unmocked_reset.catalog_rows (name text PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE unmocked_reset.relations (relid oid PRIMARY KEY, state text NOT NULL);

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
  replica boolean := current_setting('unmocked_reset.replica')::boolean;
  rel record;
  columns text;
  has_rows boolean;
  copy text;
  empty text;
  restore text;
  refill text;
  key_match text;
  settable text;
  from_copy text;
  from_table text;
  triggers text[];
  rounds int := 0;
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
    INSERT INTO unmocked_reset.ranks VALUES (rel.oid, 0);
    CONTINUE WHEN rel.relkind = 'p';  -- rows live in the partitions, each a table of its own
    -- Stored generated columns are computed again on insert; dropped ones are not there.
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
      FROM pg_attribute
     WHERE attrelid = rel.oid AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    EXECUTE format('SELECT EXISTS (SELECT FROM ONLY %s)', rel.name) INTO STRICT has_rows;
    empty := format('DELETE FROM ONLY %s', rel.name);
    restore := NULL;
    refill := NULL;
    IF has_rows THEN
      copy := format('unmocked_reset.%I', 'rows_' || rel.oid);
      EXECUTE format('CREATE TABLE %s AS SELECT %s FROM ONLY %s', copy, columns, rel.name);
      -- OVERRIDING SYSTEM VALUE: GENERATED ALWAYS identity columns get their template values.
      refill := format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT * FROM %s',
                       rel.name, columns, copy);
      SELECT string_agg(format('r.%1$I = t.%1$I', a.attname), ' AND ') INTO key_match
        FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
       WHERE i.indrelid = rel.oid AND i.indisprimary AND a.attnum = ANY (i.indkey::int2[]);
      IF NOT replica AND key_match IS NOT NULL THEN
        -- Rows of the template, which rows of tables the test did not write may reference, are
        -- put back where they are: updated (compared as text: not every type has equality),
        -- inserted if gone, never deleted. Only rows the test added are deleted.
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum),
               string_agg('r.' || quote_ident(attname), ', ' ORDER BY attnum),
               string_agg('t.' || quote_ident(attname), ', ' ORDER BY attnum)
          INTO settable, from_copy, from_table
          FROM pg_attribute a
         WHERE attrelid = rel.oid AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
           AND attidentity <> 'a'
           AND NOT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = rel.oid AND i.indisprimary
                             AND a.attnum = ANY (i.indkey::int2[]));
        empty := format('DELETE FROM ONLY %s t WHERE NOT EXISTS (SELECT FROM %s r WHERE %s)',
                        rel.name, copy, key_match);
        IF settable IS NOT NULL THEN  -- (a table of key columns alone has nothing to update)
          restore := format('UPDATE ONLY %s t SET (%s) = ROW(%s) FROM %s r WHERE %s '
                            'AND ROW(%s)::text IS DISTINCT FROM ROW(%s)::text',
                            rel.name, settable, from_copy, copy, key_match, from_table, from_copy);
        END IF;
        refill := format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT * FROM %s r '
                         'WHERE NOT EXISTS (SELECT FROM ONLY %s t WHERE %s)',
                         rel.name, columns, copy, rel.name, key_match);
      ELSIF NOT replica AND EXISTS (SELECT FROM pg_constraint
                                     WHERE contype = 'f' AND confrelid = rel.oid) THEN
        INSERT INTO unmocked_reset.facts (cannot_reset) SELECT format(
          'the table %s holds rows and has no primary key, and foreign keys reference it: only a '
          'reset that may set session_replication_role can put it back', rel.name)
         WHERE NOT EXISTS (SELECT FROM unmocked_reset.facts);
      END IF;
    END IF;
    -- Without replica, the user's triggers (those that fire as usual) are switched off around
    -- the reset, by name, so that one the schema keeps disabled stays so.
    SELECT array_agg(quote_ident(tgname) ORDER BY tgname) INTO triggers FROM pg_trigger
     WHERE tgrelid = rel.oid AND NOT tgisinternal AND tgenabled = 'O' AND NOT replica;
    INSERT INTO unmocked_reset.tables VALUES (
      rel.oid, empty, restore, refill, 0,
      format('ALTER TABLE %s DISABLE TRIGGER ', rel.name)
        || array_to_string(triggers, ', DISABLE TRIGGER '),
      format('ALTER TABLE %s ENABLE TRIGGER ', rel.name)
        || array_to_string(triggers, ', ENABLE TRIGGER '));
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

  -- Without replica, a table is emptied after the tables referencing it and refilled before
  -- them: its rank is one more than the highest of the tables it references (deferrable foreign
  -- keys aside: the reset defers them). Ranks still rising after as many rounds as there are
  -- tables mean a cycle.
  IF NOT replica THEN
    LOOP
      UPDATE unmocked_reset.ranks r SET rank = below.rank
        FROM (SELECT c.conrelid AS relid, max(p.rank) + 1 AS rank
                FROM pg_constraint c JOIN unmocked_reset.ranks p ON p.relid = c.confrelid
               WHERE c.contype = 'f' AND NOT c.condeferrable AND c.conrelid <> c.confrelid
               GROUP BY c.conrelid) below
       WHERE r.relid = below.relid AND r.rank < below.rank;
      EXIT WHEN NOT FOUND;
      rounds := rounds + 1;
      IF rounds > (SELECT count(*) FROM unmocked_reset.ranks) THEN
        INSERT INTO unmocked_reset.facts (cannot_reset) SELECT
          'its tables reference each other in a cycle of foreign keys that are not deferrable, '
          'which only a reset that may set session_replication_role can put back'
         WHERE NOT EXISTS (SELECT FROM unmocked_reset.facts);
        EXIT;
      END IF;
    END LOOP;
    UPDATE unmocked_reset.tables t SET rank = r.rank
      FROM unmocked_reset.ranks r WHERE r.relid = t.relid;
  END IF;

  INSERT INTO unmocked_reset.facts (cannot_reset) SELECT
    CASE
      WHEN EXISTS (SELECT FROM pg_largeobject_metadata)
        THEN 'its template holds large objects, which a test may change in place'
      WHEN EXISTS (SELECT FROM pg_trigger WHERE NOT tgisinternal AND tgenabled IN ('A', 'R')
                     AND tgname <> 'unmocked_note_write')
        THEN 'a trigger of the schema is ENABLE ALWAYS or REPLICA, so it would act during reset'
      WHEN EXISTS (SELECT FROM pg_rewrite WHERE ev_type <> '1' AND ev_enabled IN ('A', 'R'))
        THEN 'a rule of the schema is ENABLE ALWAYS or REPLICA, so it would act during reset'
      WHEN NOT replica AND EXISTS (SELECT FROM pg_rewrite r JOIN unmocked_reset.ranks t
                                     ON t.relid = r.ev_class
                                    WHERE r.ev_type <> '1' AND r.ev_enabled = 'O')
        THEN 'a rule of the schema would act during reset, which only a reset that may set '
             'session_replication_role can silence'
      WHEN current_setting('unmocked_reset.watch') = 'catalogs'
           AND EXISTS (SELECT FROM pg_class c JOIN unmocked_reset.ranks t ON t.relid = c.oid
                        WHERE c.relforcerowsecurity)
        THEN 'a table of the schema has FORCE ROW LEVEL SECURITY, which keeps rows from a '
             'reset by a role that is not a superuser'
      WHEN current_setting('unmocked_reset.watch') = 'catalogs'
           AND EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.relkind = 'm' AND n.nspname <> 'information_schema')
        THEN 'it has materialized views, whose REFRESH ... CONCURRENTLY only event triggers '
             '(a superuser''s) would see'
    END
   WHERE NOT EXISTS (SELECT FROM unmocked_reset.facts);
END $$;

CREATE FUNCTION unmocked_reset.schema_change() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  facts unmocked_reset.facts;
  changed text;
BEGIN
  SELECT * INTO STRICT facts FROM unmocked_reset.facts;
  IF facts.watch = 'events' THEN
    IF EXISTS (SELECT FROM unmocked_reset.schema_changed) THEN
      RETURN 'the schema changed';
    ELSIF (SELECT count(*) FROM pg_event_trigger
            WHERE evtname LIKE 'unmocked\_%' AND evtenabled = 'A') <> 3 THEN
      -- (Dropping or disabling a trigger on a table is DDL, which they note.)
      RETURN 'an event trigger of unmocked was dropped or disabled';
    END IF;
    RETURN NULL;
  END IF;
  -- Past a billion transactions the xid comparison could wrap: the database is cloned anew.
  IF age(facts.watermark) NOT BETWEEN 0 AND 1000000000 THEN
    RETURN 'too many transactions ran since its last reset to read the catalogs';
  END IF;
  EXECUTE facts.catalog_check INTO changed USING age(facts.watermark);
  RETURN CASE WHEN changed IS NOT NULL THEN 'the schema changed (' || changed || ')' END;
END $$;

CREATE FUNCTION unmocked_reset.reset() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  facts unmocked_reset.facts;
  why text;
  statement record;
BEGIN
  SELECT * INTO STRICT facts FROM unmocked_reset.facts;
  why := coalesce(facts.cannot_reset, unmocked_reset.schema_change());
  IF why IS NOT NULL THEN
    RETURN why;
  END IF;

  IF facts.replica THEN
    SET LOCAL session_replication_role = replica;
  ELSE
    SET CONSTRAINTS ALL DEFERRED;
  END IF;
  FOR statement IN
    SELECT tables.empty, tables.switch_off FROM unmocked_reset.tables
     WHERE relid IN (SELECT touched FROM unmocked_reset.reaches
                      WHERE written IN (SELECT relid FROM unmocked_reset.written))
     ORDER BY rank DESC
  LOOP
    IF statement.switch_off IS NOT NULL THEN
      EXECUTE statement.switch_off;
    END IF;
    EXECUTE statement.empty;
  END LOOP;
  FOR statement IN
    SELECT tables.restore, tables.refill, tables.switch_on FROM unmocked_reset.tables
     WHERE relid IN (SELECT touched FROM unmocked_reset.reaches
                      WHERE written IN (SELECT relid FROM unmocked_reset.written))
     ORDER BY rank
  LOOP
    IF statement.restore IS NOT NULL THEN
      EXECUTE statement.restore;
    END IF;
    IF statement.refill IS NOT NULL THEN
      EXECUTE statement.refill;
    END IF;
    IF statement.switch_on IS NOT NULL THEN
      EXECUTE statement.switch_on;
    END IF;
  END LOOP;
  PERFORM setval(seqid, last_value, is_called) FROM unmocked_reset.sequences;
  PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
  DELETE FROM unmocked_reset.written;
  -- (The catalog rows this transaction wrote, switching triggers, carry the watermark itself.)
  UPDATE unmocked_reset.facts SET watermark = pg_current_xact_id()::xid;
  RETURN NULL;
END $$;

DO $$
BEGIN
  IF current_setting('unmocked_reset.watch') = 'events' THEN
    CREATE EVENT TRIGGER unmocked_ddl ON ddl_command_end
      EXECUTE FUNCTION unmocked_reset.note_schema_change();
    CREATE EVENT TRIGGER unmocked_index ON ddl_command_start
      WHEN TAG IN ('CREATE INDEX', 'DROP INDEX')
      EXECUTE FUNCTION unmocked_reset.note_schema_change();
    CREATE EVENT TRIGGER unmocked_drop ON sql_drop
      EXECUTE FUNCTION unmocked_reset.note_schema_change();
    ALTER EVENT TRIGGER unmocked_ddl ENABLE ALWAYS;
    ALTER EVENT TRIGGER unmocked_drop ENABLE ALWAYS;
    ALTER EVENT TRIGGER unmocked_index ENABLE ALWAYS;
  END IF;
END $$;

-- Last, once every object of this file exists: the census the 'catalogs' watch compares with.
-- Every catalog of the database counts (its rows, and none newer than the watermark), but the
-- statistics and the large objects: data, not schema. Temporary schemas stay once a session made
-- one; what they held goes with the session. An index a cancelled DROP INDEX CONCURRENTLY left
-- invalid changes a flag in place, without a newer row: the valid ones are counted too.
DO $$
DECLARE
  state text := 'concat_ws(''|'', c.relname, c.relnamespace, c.reltype, c.reloftype, c.relowner, '
    'c.relam, c.reltablespace, c.relkind, c.relnatts, c.relchecks, c.relpersistence, '
    'c.relrowsecurity, c.relforcerowsecurity, c.relreplident, c.relispartition, c.relacl, '
    'c.reloptions, c.relpartbound, c.reltoastrelid)';
  catalogs text;
BEGIN
  UPDATE unmocked_reset.facts SET watermark = pg_current_xact_id()::xid;
  IF current_setting('unmocked_reset.watch') <> 'catalogs' THEN
    RETURN;
  END IF;
  EXECUTE format('INSERT INTO unmocked_reset.relations SELECT c.oid, %s FROM pg_class c', state);
  SELECT string_agg(format(
           'SELECT %L AS name, count(*) AS n, count(*) FILTER (WHERE age(c.xmin) < $1%s) AS newer '
           'FROM pg_catalog.%I c%s',
           relname,
           CASE relname WHEN 'pg_class' THEN format(
             ' AND NOT EXISTS (SELECT FROM unmocked_reset.relations r '
             'WHERE r.relid = c.oid AND r.state = %s)', state) ELSE '' END,
           relname,
           CASE relname WHEN 'pg_namespace' THEN ' WHERE c.nspname !~ ''^pg_(toast_)?temp_'''
             ELSE '' END),
         ' UNION ALL ' ORDER BY relname)
         || ' UNION ALL SELECT ''valid indexes'', count(*) FILTER (WHERE indisvalid AND '
            'indisready AND indislive), 0 FROM pg_catalog.pg_index'
    INTO catalogs
    FROM pg_class
   WHERE relnamespace = 'pg_catalog'::regnamespace AND relkind = 'r' AND NOT relisshared
     AND has_table_privilege(oid, 'SELECT')  -- pg_user_mapping is a superuser's only
     AND relname NOT IN ('pg_statistic', 'pg_statistic_ext_data', 'pg_largeobject',
                         'pg_largeobject_metadata');
  EXECUTE format('INSERT INTO unmocked_reset.catalog_rows SELECT name, n FROM (%s) seen', catalogs)
    USING 0;
  UPDATE unmocked_reset.facts SET catalog_check = format(
    'SELECT seen.name FROM (%s) seen LEFT JOIN unmocked_reset.catalog_rows known USING (name) '
    'WHERE seen.newer > 0 OR known.n IS DISTINCT FROM seen.n LIMIT 1', catalogs);
END $$;
