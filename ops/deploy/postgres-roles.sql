-- People's Bank ledger: PostgreSQL roles and privileges for production.
--
-- Two LOGIN roles:
--
--   bank_migrator  owns schema public and every object in it; runs `bank db upgrade` (Alembic).
--                  Its credentials are used only while migrating.
--   bank_app       the service: `bank serve --no-migrate`, `bank audit sign|verify`,
--                  `bank check`. It may read every table and append to every table; it may
--                  UPDATE only the running totals and status of `accounts` and the counters of
--                  `ledger_head`; it may DELETE nothing, TRUNCATE nothing, and create, alter or
--                  drop nothing (no DDL).
--
-- History tables (entries, postings, requests, audit_log, approvals, approval_decisions,
-- checkpoints) are append-only twice over: bank_app has no UPDATE/DELETE privilege on them (this
-- file), and the migrations' triggers refuse UPDATE/DELETE even for the owner.
--
-- How to run it: as a superuser, connected to the ledger database, once before the first
-- migration (it creates the roles; table grants are skipped for tables that do not exist yet)
-- and AGAIN AFTER EVERY MIGRATION (see "Default privileges" below for why):
--
--     sudo -u postgres /opt/peoplesbank/.venv/bin/python \
--         /opt/peoplesbank/ops/deploy/apply_roles.py postgresql:///peoplesbank
-- or
--     sudo -u postgres psql -d peoplesbank -v ON_ERROR_STOP=1 --single-transaction \
--         -f /opt/peoplesbank/ops/deploy/postgres-roles.sql
--
-- It is idempotent and converges: every run resets bank_app's privileges on the tables of
-- schema public to exactly what is granted here, then checks the result and fails (rolling
-- everything back) if bank_app can still UPDATE history, DELETE or TRUNCATE anything, or run DDL,
-- however it got that right (a hand-made GRANT, a role membership).
--
-- Passwords are NOT in this file. Either let apply_roles.py set them (it reads each password from
-- a file and sends PostgreSQL only a SCRAM-SHA-256 verifier, computed client-side), or in psql:
--     \password bank_app
--     \password bank_migrator
-- (psql's \password also hashes client-side; avoid ALTER ROLE ... PASSWORD 'plain text', which
-- can end up in the server log and in psql's history.)
--
-- Role names: apply_roles.py --app-role/--migrator-role renames the two roles wherever the words
-- bank_app and bank_migrator appear below (for several environments on one cluster; the tests
-- use unique names). Roles are cluster-wide; privileges are per database.

-- 1. The roles. -----------------------------------------------------------------------------
-- Created LOGIN with every other attribute at its safe default (NOSUPERUSER NOCREATEDB
-- NOCREATEROLE NOREPLICATION NOBYPASSRLS). A role that already exists with a dangerous attribute
-- is refused rather than silently changed: somebody made it that way, and a human should look.
DO $$
DECLARE
  wanted text;
  found record;
BEGIN
  FOREACH wanted IN ARRAY ARRAY['bank_migrator', 'bank_app'] LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = wanted) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I LOGIN', wanted);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- created by a concurrent run of this script
      END;
    END IF;
    SELECT * INTO found FROM pg_roles WHERE rolname = wanted;
    IF found.rolsuper OR found.rolcreaterole OR found.rolcreatedb OR found.rolreplication
       OR found.rolbypassrls THEN
      RAISE EXCEPTION 'role % has SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS; '
                      'refusing to continue', wanted;
    END IF;
    IF NOT found.rolcanlogin THEN
      EXECUTE format('ALTER ROLE %I LOGIN', wanted);
    END IF;
  END LOOP;
  -- bank_app must not be able to act as the owner of the schema.
  IF pg_has_role('bank_app', 'bank_migrator', 'MEMBER') THEN
    RAISE EXCEPTION 'bank_app is a member of bank_migrator (it would own the schema); '
                    'REVOKE bank_migrator FROM bank_app first';
  END IF;
END $$;

-- 2. The database: only our two roles may connect; nobody gets temporary tables. ------------
-- (Other tools that need to connect, monitoring for example, get their own GRANT CONNECT.)
DO $$
BEGIN
  EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('REVOKE ALL ON DATABASE %I FROM bank_app', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO bank_migrator, bank_app', current_database());
END $$;

-- 3. The schema belongs to bank_migrator; bank_app may only look things up in it. -----------
ALTER SCHEMA public OWNER TO bank_migrator;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM bank_app;
GRANT USAGE ON SCHEMA public TO bank_app;

-- So do the objects in it. Normally bank_migrator created them all; this hands over anything
-- created by someone else (migrations run as a superuser by mistake, or as a stand-in in tests),
-- so that the next migration, run as bank_migrator, may alter it. Extension members and
-- sequences owned by a column (they follow their table) are left alone.
DO $$
DECLARE
  obj record;
BEGIN
  FOR obj IN
    SELECT c.oid::regclass AS name,
           CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                          WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                          ELSE 'TABLE' END AS kind
    FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
      AND c.relowner <> 'bank_migrator'::regrole
      AND NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND (d.deptype = 'e' OR (c.relkind = 'S' AND d.deptype IN ('a', 'i'))))
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO bank_migrator', obj.kind, obj.name);
  END LOOP;
  FOR obj IN
    SELECT p.oid::regprocedure AS name
    FROM pg_proc p
    WHERE p.pronamespace = 'public'::regnamespace
      AND p.proowner <> 'bank_migrator'::regrole
      AND NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                        AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO bank_migrator', obj.name);
  END LOOP;
  FOR obj IN
    SELECT t.oid::regtype AS name
    FROM pg_type t
    WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd')
      AND t.typowner <> 'bank_migrator'::regrole
      AND NOT EXISTS (SELECT FROM pg_depend d
                      WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                        AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER TYPE %s OWNER TO bank_migrator', obj.name);
  END LOOP;
END $$;

-- 4. bank_app's table privileges, from scratch. ---------------------------------------------
-- REVOKE ALL on a table also revokes column privileges, so every run starts from nothing.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM bank_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM bank_app;

-- Read and append everywhere. (No table uses a sequence today; USAGE lets INSERT draw from one
-- should a later migration add a serial or identity column. Not UPDATE: no setval.)
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO bank_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO bank_app;

-- The only UPDATEs the service makes (bank/adapters/sql.py): the running totals and the status
-- of an account (save_account_totals, set_account_status), and the counters of the ledger head
-- (save_head; the head lock, SELECT ... FOR UPDATE, needs UPDATE on at least one column).
-- Granted per column: identity columns (account_id, currency, owner, flags, created_ns) stay
-- read-only for bank_app, on top of the accounts_guard trigger.
-- Skipped, with a notice, for a table that does not exist yet (the run before migrations).
DO $$
BEGIN
  IF to_regclass('public.accounts') IS NULL THEN
    RAISE NOTICE 'table accounts does not exist yet: run this again after `bank db upgrade`';
  ELSE
    GRANT UPDATE (debits_posted, credits_posted, debits_pending, credits_pending,
                  status, closed_ns)
      ON public.accounts TO bank_app;
  END IF;
  IF to_regclass('public.ledger_head') IS NULL THEN
    RAISE NOTICE 'table ledger_head does not exist yet: run this again after `bank db upgrade`';
  ELSE
    GRANT UPDATE (next_seq, last_recorded_ns, audit_size) ON public.ledger_head TO bank_app;
  END IF;
  -- Members (bank/adapters/sql_members.py): KYC status, connected group and erasure; and the
  -- wrapped data key, rewrapped on master key rotation and NULLed by erasure (crypto-shredding
  -- is an UPDATE: bank_app deletes nothing).
  IF to_regclass('public.members') IS NULL THEN
    RAISE NOTICE 'table members does not exist yet: run this again after `bank db upgrade`';
  ELSE
    GRANT UPDATE (kyc_status, connected_group_id, updated_ns, erased_ns)
      ON public.members TO bank_app;
    GRANT UPDATE (master_key_id, wrapped_key, destroyed_ns) ON public.member_keys TO bank_app;
  END IF;
  -- The lending book (bank/adapters/sql_loans.py): a loan's lifecycle state and cached
  -- servicing figures (what never changes is guarded by a trigger), the amounts booked per
  -- bucket, the derived arrears history (recomputed after a backdated transaction), close-of-
  -- business runs and the business date. Products, schedules and transactions stay append-only.
  IF to_regclass('public.loans') IS NULL THEN
    RAISE NOTICE 'table loans does not exist yet: run this again after `bank db upgrade`';
  ELSE
    GRANT UPDATE (status, amount_approved_minor, terms_json, decided_by, decided_ns,
                  decision_note, disbursed_on, settlement_account_id, principal_account_id,
                  interest_account_id, fee_account_id, penalty_account_id, allowance_account_id,
                  overpayment_account_id, forborne, days_past_due, arrears_bucket, stage,
                  arrears_minor, updated_ns) ON public.loans TO bank_app;
    GRANT UPDATE ON public.loan_balances, public.loan_arrears, public.cob_runs,
                    public.business_date TO bank_app;
  END IF;
  -- Alembic's bookkeeping is the migrator's business: bank_app reads it (`bank serve
  -- --no-migrate` and `bank db current` compare it with the code) and writes nothing to it.
  IF to_regclass('public.alembic_version') IS NOT NULL THEN
    REVOKE INSERT ON public.alembic_version FROM bank_app;
  END IF;
END $$;

-- History tables: append-only. Listed explicitly even though nothing above grants UPDATE or
-- DELETE on them, because
--   * default privileges (below) cannot tell a history table from any other table: they apply
--     to every table bank_migrator creates, so they can only carry what is right for ALL tables
--     (SELECT, INSERT), never "UPDATE except on history";
--   * a privilege granted by hand later (GRANT ALL ... TO bank_app, a role bank_app is made a
--     member of) is not undone by the REVOKE ALL above if it came through membership; naming
--     the tables here, and checking them in step 6, catches it on the next run;
--   * the list is the contract: bank/adapters/tables.py APPEND_ONLY names the same tables, and a
--     migration that adds a history table must add it here and to the triggers
--     (migrations/guards.py create_append_only).
DO $$
DECLARE
  history CONSTANT text[] := ARRAY['entries', 'postings', 'requests', 'audit_log', 'approvals',
                                   'approval_decisions', 'checkpoints', 'connected_groups'];
  name text;
BEGIN
  FOREACH name IN ARRAY history LOOP
    IF to_regclass(format('public.%I', name)) IS NULL THEN
      RAISE NOTICE 'history table % does not exist yet: run this again after `bank db upgrade`',
                   name;
      CONTINUE;
    END IF;
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON public.%I FROM PUBLIC, bank_app', name);
  END LOOP;
END $$;

-- 5. Default privileges: tables bank_migrator creates in later migrations. ------------------
-- A new table is readable and appendable by bank_app from the moment its migration commits, so
-- a new server version can use it without waiting for this script. Defaults never grant UPDATE
-- (see above), so a new mutable table needs its UPDATE grant added to step 4 and this script
-- re-run after the migration; until then bank_app is refused, loudly, rather than allowed too
-- much. Defaults apply only to objects created BY bank_migrator: tables created by anyone else
-- get their grants from step 4 on the next run.
ALTER DEFAULT PRIVILEGES FOR ROLE bank_migrator IN SCHEMA public
  GRANT SELECT, INSERT ON TABLES TO bank_app;
ALTER DEFAULT PRIVILEGES FOR ROLE bank_migrator IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO bank_app;

-- 6. Check the result, whatever path a privilege came by (has_*_privilege follows role
-- membership). Any failure raises, and the whole run rolls back.
DO $$
DECLARE
  history CONSTANT text[] := ARRAY['entries', 'postings', 'requests', 'audit_log', 'approvals',
                                   'approval_decisions', 'checkpoints', 'connected_groups'];
  mutable CONSTANT text[] := ARRAY['accounts', 'ledger_head', 'members', 'member_keys',
                                   'loans', 'loan_balances', 'loan_arrears',
                                   'cob_runs', 'business_date'];
  tbl record;
  privilege text;
BEGIN
  IF has_database_privilege('bank_app', current_database(), 'CREATE')
     OR has_database_privilege('bank_app', current_database(), 'TEMPORARY') THEN
    RAISE EXCEPTION 'bank_app can create schemas or temporary tables in this database';
  END IF;
  IF has_schema_privilege('bank_app', 'public', 'CREATE') THEN
    RAISE EXCEPTION 'bank_app can create objects in schema public';
  END IF;
  FOR tbl IN
    SELECT c.oid, c.relname, pg_get_userbyid(c.relowner) AS owner
    FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
  LOOP
    IF pg_has_role('bank_app', tbl.owner, 'MEMBER') THEN
      RAISE EXCEPTION 'bank_app owns (or is a member of the owner of) table %', tbl.relname;
    END IF;
    FOREACH privilege IN ARRAY ARRAY['DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'] LOOP
      IF has_table_privilege('bank_app', tbl.oid, privilege) THEN
        RAISE EXCEPTION 'bank_app has % on table %', privilege, tbl.relname;
      END IF;
    END LOOP;
    IF NOT tbl.relname = ANY (mutable)
       AND has_any_column_privilege('bank_app', tbl.oid, 'UPDATE') THEN
      RAISE EXCEPTION 'bank_app can UPDATE table % (%)', tbl.relname,
        CASE WHEN tbl.relname = ANY (history) THEN 'a history table' ELSE 'not a mutable table' END;
    END IF;
  END LOOP;
END $$;
