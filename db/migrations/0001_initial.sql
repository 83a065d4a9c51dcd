-- 0001: initial schema of the QKDN controller store (DESIGN.md section 8).
-- Applied once, inside the start-up migration transaction, by PgStore. Never edit a released
-- migration: add a new numbered file instead. No table holds key material: only key IDs, counts,
-- states and times.

-- Time conversion helpers: the C++ side passes and reads microseconds since the Unix epoch.
-- Declared STABLE (like the timestamptz operators they use) so that the planner inlines them:
-- an IMMUTABLE wrapper around STABLE operators is not inlined and costs ~10 us per call.
-- date_part's float8 is exact to the microsecond for the next ~285 years once rounded.
CREATE FUNCTION qkdn_us_to_ts(us bigint) RETURNS timestamptz
  LANGUAGE sql STABLE STRICT PARALLEL SAFE
  AS $$ SELECT timestamptz 'epoch' + us * interval '1 microsecond' $$;

CREATE FUNCTION qkdn_ts_to_us(ts timestamptz) RETURNS bigint
  LANGUAGE sql STABLE STRICT PARALLEL SAFE
  AS $$ SELECT round(date_part('epoch', ts) * 1000000)::bigint $$;

-- Topology ----------------------------------------------------------------------------------

-- The topology document's name; at most one row (id is always 1). No row = no topology saved.
CREATE TABLE topology_meta (
  id         smallint PRIMARY KEY CHECK (id = 1),
  name       text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE kms (
  km_id text PRIMARY KEY CHECK (km_id <> ''),
  site  text NOT NULL DEFAULT '',
  ord   integer NOT NULL  -- position in the document, so export keeps the operator's order
);

CREATE TABLE links (
  link_id      text PRIMARY KEY CHECK (link_id <> ''),
  a            text NOT NULL REFERENCES kms (km_id),
  b            text NOT NULL REFERENCES kms (km_id),
  key_rate_bps double precision NOT NULL DEFAULT 0 CHECK (key_rate_bps >= 0),
  distance_km  double precision NOT NULL DEFAULT 0 CHECK (distance_km >= 0),
  qber         double precision NOT NULL DEFAULT 0 CHECK (qber >= 0 AND qber <= 1),
  ord          integer NOT NULL,
  CHECK (a <> b)
);
CREATE INDEX links_a_idx ON links (a);
CREATE INDEX links_b_idx ON links (b);

CREATE TABLE applications (
  sae_id text PRIMARY KEY CHECK (sae_id <> ''),
  km_id  text NOT NULL REFERENCES kms (km_id),
  ord    integer NOT NULL
);
CREATE INDEX applications_km_idx ON applications (km_id);

-- Operator configuration of a link; removed with its link.
CREATE TABLE link_configs (
  link_id         text PRIMARY KEY REFERENCES links (link_id) ON DELETE CASCADE,
  admin_state     text NOT NULL DEFAULT 'enabled'
                  CHECK (admin_state IN ('enabled', 'disabled', 'maintenance')),
  qber_threshold  double precision CHECK (qber_threshold >= 0 AND qber_threshold <= 1),
  pool_floor_bits bigint CHECK (pool_floor_bits >= 0)
);

-- Policies, schedules, pinned routes ------------------------------------------------------

-- Rerouting policy per scope: ('', '') is network-wide, (src, dst) overrides one KM pair.
-- No foreign keys to kms: a policy may outlive a topology change and is then simply unused.
CREATE TABLE policies (
  src_km     text NOT NULL,
  dst_km     text NOT NULL,
  mode       text NOT NULL
             CHECK (mode IN ('manual', 'fixed_rate', 'traffic_adaptive', 'scheduled')),
  params     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(params) = 'object'),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (src_km, dst_km),
  CHECK ((src_km = '') = (dst_km = ''))
);

CREATE TABLE schedules (
  schedule_id    text PRIMARY KEY CHECK (schedule_id <> ''),
  src_km         text NOT NULL,
  dst_km         text NOT NULL,
  number_of_keys bigint NOT NULL CHECK (number_of_keys >= 0),
  key_size_bits  bigint NOT NULL CHECK (key_size_bits > 0),
  not_before     timestamptz NOT NULL,
  not_after      timestamptz NOT NULL,
  created_at     timestamptz NOT NULL,
  CHECK (not_after >= not_before)
);

-- Manual routes. Kept across topology changes: the core raises pinned_route_broken instead.
CREATE TABLE pinned_routes (
  src_km     text NOT NULL,
  dst_km     text NOT NULL,
  kms        text[] NOT NULL CHECK (cardinality(kms) >= 2),
  links      text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL,
  PRIMARY KEY (src_km, dst_km),
  CHECK (cardinality(links) = 0 OR cardinality(links) = cardinality(kms) - 1)
);

-- Sessions and relays ----------------------------------------------------------------------

CREATE TABLE sessions (
  session_id     text PRIMARY KEY CHECK (session_id <> ''),
  src_sae        text NOT NULL,
  dst_sae        text NOT NULL,
  src_km         text NOT NULL,
  dst_km         text NOT NULL,
  keys_requested bigint NOT NULL CHECK (keys_requested >= 0),
  keys_delivered bigint NOT NULL CHECK (keys_delivered >= 0),
  state          text NOT NULL
                 CHECK (state IN ('pending', 'active', 'closed', 'expired', 'failed')),
  created_at     timestamptz NOT NULL,
  updated_at     timestamptz NOT NULL,
  expires_at     timestamptz
);
-- load() reads every open session and the most recent finished ones.
CREATE INDEX sessions_open_idx ON sessions (session_id) WHERE state IN ('pending', 'active');
CREATE INDEX sessions_updated_idx ON sessions (updated_at);

CREATE TABLE relays (
  relay_id       text PRIMARY KEY CHECK (relay_id <> ''),
  session_id     text NOT NULL DEFAULT '',  -- '' = instruction-driven relay
  src_km         text NOT NULL,
  dst_km         text NOT NULL,
  route_kms      text[] NOT NULL DEFAULT '{}',
  route_links    text[] NOT NULL DEFAULT '{}',
  number_of_keys bigint NOT NULL CHECK (number_of_keys >= 0),
  key_size_bits  bigint NOT NULL CHECK (key_size_bits > 0),
  state          text NOT NULL
                 CHECK (state IN ('requested', 'reserved', 'relaying', 'relayed', 'failed',
                                  'voided')),
  reason         text NOT NULL DEFAULT '',
  created_at     timestamptz NOT NULL,
  updated_at     timestamptz NOT NULL
);
CREATE INDEX relays_open_idx ON relays (relay_id)
  WHERE state IN ('requested', 'reserved', 'relaying');
CREATE INDEX relays_updated_idx ON relays (updated_at);
CREATE INDEX relays_session_idx ON relays (session_id) WHERE session_id <> '';

-- Reservation ledger (Q.4164 7.5/7.6) --------------------------------------------------------

-- One row per KMA key ID, forever: the primary key is what guarantees that a key ID is never
-- reserved or allocated twice, even across restarts. Rows are never deleted.
CREATE TABLE ledger (
  key_id           text PRIMARY KEY CHECK (key_id <> ''),
  link_id          text NOT NULL,
  km_id            text NOT NULL,
  peer_km_id       text NOT NULL,
  relay_id         text NOT NULL,
  state            text NOT NULL
                   CHECK (state IN ('reserved', 'allocated', 'consumed', 'released')),
  lease_expires_at timestamptz,
  updated_at       timestamptz NOT NULL,
  CHECK (lease_expires_at IS NULL OR state IN ('reserved', 'allocated'))
);
-- Lease expiry sweeps look only at live entries.
CREATE INDEX ledger_lease_idx ON ledger (lease_expires_at)
  WHERE state IN ('reserved', 'allocated');
CREATE INDEX ledger_relay_idx ON ledger (relay_id);

-- Transition rules, enforced in the database so that no client can break them:
--   new key:   reserved | allocated
--   reserved:  -> reserved (lease renewal) | allocated | released
--   allocated: -> allocated (lease renewal) | consumed | released
--   consumed, released: final
-- and a key stays with the relay, link and KMs that first took it. Violations raise SQLSTATE
-- QK001, which PgStore maps to Conflict. The new-key rule is an AFTER INSERT trigger because
-- with INSERT ... ON CONFLICT DO UPDATE, BEFORE INSERT triggers also fire for rows that end up
-- updating an existing key; AFTER INSERT fires only for rows really inserted.
CREATE FUNCTION qkdn_ledger_new_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.state NOT IN ('reserved', 'allocated') THEN
    RAISE EXCEPTION 'ledger: key % is unknown and cannot enter state %', NEW.key_id, NEW.state
      USING ERRCODE = 'QK001';
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER ledger_new_key AFTER INSERT ON ledger
  FOR EACH ROW EXECUTE FUNCTION qkdn_ledger_new_key();

CREATE FUNCTION qkdn_ledger_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.key_id <> OLD.key_id OR NEW.relay_id <> OLD.relay_id OR NEW.link_id <> OLD.link_id
     OR NEW.km_id <> OLD.km_id OR NEW.peer_km_id <> OLD.peer_km_id THEN
    RAISE EXCEPTION 'ledger: key % already belongs to relay % on link %', OLD.key_id,
      OLD.relay_id, OLD.link_id USING ERRCODE = 'QK001';
  END IF;
  IF NOT ((OLD.state = 'reserved' AND NEW.state IN ('reserved', 'allocated', 'released'))
          OR (OLD.state = 'allocated' AND NEW.state IN ('allocated', 'consumed', 'released'))) THEN
    RAISE EXCEPTION 'ledger: key % cannot go from % to %', OLD.key_id, OLD.state, NEW.state
      USING ERRCODE = 'QK001';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER ledger_transition BEFORE UPDATE ON ledger
  FOR EACH ROW EXECUTE FUNCTION qkdn_ledger_transition();

CREATE FUNCTION qkdn_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'QK002';
END
$$;
CREATE TRIGGER ledger_no_delete BEFORE DELETE OR TRUNCATE ON ledger
  FOR EACH STATEMENT EXECUTE FUNCTION qkdn_refuse_change();

-- Idempotency keys of applied ledger batches: a batch whose key is here has committed.
CREATE TABLE ledger_batches (
  idempotency_key text PRIMARY KEY CHECK (idempotency_key <> ''),
  entries         integer NOT NULL,
  committed_at    timestamptz NOT NULL DEFAULT now()
);

-- Alarms ----------------------------------------------------------------------------------------

CREATE TABLE alarms (
  id              bigint PRIMARY KEY CHECK (id > 0),
  type            text NOT NULL CHECK (type <> ''),
  resource        text NOT NULL CHECK (resource <> ''),
  km_id           text NOT NULL DEFAULT '',
  link_id         text NOT NULL DEFAULT '',
  severity        text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning')),
  state           text NOT NULL CHECK (state IN ('active', 'cleared')),
  acknowledged    boolean NOT NULL DEFAULT false,
  acknowledged_by text NOT NULL DEFAULT '',
  acknowledged_at timestamptz,
  raised_at       timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL,
  cleared_at      timestamptz,
  last_value      double precision NOT NULL DEFAULT 0,
  text            text NOT NULL DEFAULT '',
  count           bigint NOT NULL DEFAULT 1 CHECK (count >= 1)
);
-- At most one active alarm per (type, resource), as in the AlarmTable.
CREATE UNIQUE INDEX alarms_active_key ON alarms (type, resource) WHERE state = 'active';

-- Accounting ------------------------------------------------------------------------------------

CREATE TABLE accounting (
  bucket_start timestamptz NOT NULL,
  sae_id       text NOT NULL,
  session_id   text NOT NULL DEFAULT '',
  key_bytes    bigint NOT NULL DEFAULT 0 CHECK (key_bytes >= 0),
  keys         bigint NOT NULL DEFAULT 0 CHECK (keys >= 0),
  PRIMARY KEY (bucket_start, sae_id, session_id)
);
CREATE INDEX accounting_sae_idx ON accounting (sae_id, bucket_start);

-- Audit (append-only) ---------------------------------------------------------------------------

CREATE TABLE audit (
  id       bigserial PRIMARY KEY,
  at       timestamptz NOT NULL,
  actor    text NOT NULL,
  action   text NOT NULL,
  resource text NOT NULL DEFAULT '',
  outcome  text NOT NULL DEFAULT '',
  detail   text NOT NULL DEFAULT '',
  remote   text NOT NULL DEFAULT ''
);
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
  FOR EACH ROW EXECUTE FUNCTION qkdn_refuse_change();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
  FOR EACH STATEMENT EXECUTE FUNCTION qkdn_refuse_change();
