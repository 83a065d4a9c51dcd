-- 0004: a key released before it was ever allocated may be reserved again (issue 12).
--
-- The controller now tells a KM when its ledger releases a reservation (Ck 0x41EA, see
-- docs/ck-extensions.md "Key release"), and the KM offers such a key again. A key the ledger
-- released while only reserved was never used: no 0x4104 names a key before its allocation. So
-- the ledger accepts it again, from the same hop (near KM, far KM, link), under another relay.
-- "Never allocated twice" stays absolute: ever_allocated is set the moment a key is allocated
-- (or consumed) and never cleared, and a key with it set never leaves consumed or released.
--
-- Rows written before this migration cannot tell how they were released: they count as
-- allocated (the safe side), so they stay final as before.
ALTER TABLE ledger ADD COLUMN ever_allocated boolean NOT NULL DEFAULT false;
UPDATE ledger SET ever_allocated = (state <> 'reserved');

-- Writers do not set the flag: the database derives it from the states a key goes through.
-- BEFORE INSERT also fires for an INSERT ... ON CONFLICT that ends up updating; the value it
-- sets is then only EXCLUDED's, which the update below does not read.
CREATE FUNCTION qkdn_ledger_insert_flag() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.ever_allocated := NEW.state IN ('allocated', 'consumed');
  RETURN NEW;
END
$$;
CREATE TRIGGER ledger_insert_flag BEFORE INSERT ON ledger
  FOR EACH ROW EXECUTE FUNCTION qkdn_ledger_insert_flag();

-- Transition rules (replacing 0001's):
--   reserved:  -> reserved (lease renewal) | allocated | released
--   allocated: -> allocated (lease renewal) | consumed | released
--   released:  -> reserved, only if never allocated, same link and KMs (any relay)
--   consumed, and released after allocation: final
-- A key keeps its link and KMs forever, and its relay except when released -> reserved.
-- Violations raise SQLSTATE QK001, which PgStore maps to Conflict.
CREATE OR REPLACE FUNCTION qkdn_ledger_transition() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  again boolean := OLD.state = 'released' AND NEW.state = 'reserved' AND NOT OLD.ever_allocated;
BEGIN
  IF NEW.key_id <> OLD.key_id OR NEW.link_id <> OLD.link_id OR NEW.km_id <> OLD.km_id
     OR NEW.peer_km_id <> OLD.peer_km_id OR (NEW.relay_id <> OLD.relay_id AND NOT again) THEN
    RAISE EXCEPTION 'ledger: key % already belongs to relay % on link %', OLD.key_id,
      OLD.relay_id, OLD.link_id USING ERRCODE = 'QK001';
  END IF;
  IF NOT ((OLD.state = 'reserved' AND NEW.state IN ('reserved', 'allocated', 'released'))
          OR (OLD.state = 'allocated' AND NEW.state IN ('allocated', 'consumed', 'released'))
          OR again) THEN
    RAISE EXCEPTION 'ledger: key % cannot go from % to %', OLD.key_id, OLD.state,
      CASE WHEN OLD.ever_allocated AND NEW.state = 'reserved'
           THEN NEW.state || ' (it was allocated)' ELSE NEW.state END
      USING ERRCODE = 'QK001';
  END IF;
  NEW.ever_allocated := OLD.ever_allocated OR NEW.state IN ('allocated', 'consumed');
  RETURN NEW;
END
$$;
