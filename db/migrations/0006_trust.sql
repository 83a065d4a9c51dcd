-- 0006: trust in the model (issue 20). A trust level and tags per KM (topology document
-- kms[].trust_level / kms[].tags), the tags a policy's routes avoid, and the trust constraints of
-- SAE pairs. Trust levels are integers in [0, 100]; a KM without one is unrated.
ALTER TABLE kms
  ADD COLUMN trust_level integer CHECK (trust_level >= 0 AND trust_level <= 100),
  ADD COLUMN tags text[] NOT NULL DEFAULT '{}' CHECK (array_position(tags, NULL) IS NULL);

ALTER TABLE policies
  ADD COLUMN avoid_tags text[] NOT NULL DEFAULT '{}'
    CHECK (array_position(avoid_tags, NULL) IS NULL);

-- Directional: relays for sessions from src_sae to dst_sae. No foreign keys to applications: the
-- constraints may outlive a topology change (as policies do) and then simply apply to nothing.
CREATE TABLE sae_constraints (
  src_sae           text NOT NULL CHECK (src_sae <> ''),
  dst_sae           text NOT NULL CHECK (dst_sae <> ''),
  max_intermediates integer CHECK (max_intermediates >= 0),
  min_trust_level   integer NOT NULL DEFAULT 0
                    CHECK (min_trust_level >= 0 AND min_trust_level <= 100),
  avoid_tags        text[] NOT NULL DEFAULT '{}'
                    CHECK (array_position(avoid_tags, NULL) IS NULL),
  updated_at        timestamptz NOT NULL,
  PRIMARY KEY (src_sae, dst_sae),
  CHECK (src_sae <> dst_sae)
);
