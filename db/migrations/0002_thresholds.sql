-- 0002: network-wide thresholds (PUT /api/v1/thresholds), so that an operator's QBER threshold,
-- pool floor and QBER hysteresis survive a restart. At most one row (id is always 1); no row =
-- the controller's built-in defaults. Per-link overrides stay in link_configs.
CREATE TABLE thresholds (
  id              smallint PRIMARY KEY CHECK (id = 1),
  qber            double precision NOT NULL CHECK (qber > 0 AND qber <= 1),
  pool_floor_bits bigint NOT NULL CHECK (pool_floor_bits >= 0),
  qber_hysteresis double precision NOT NULL CHECK (qber_hysteresis >= 0 AND qber_hysteresis < 1),
  updated_at      timestamptz NOT NULL DEFAULT now()
);
