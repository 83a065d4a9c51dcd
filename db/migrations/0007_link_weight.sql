-- 0007: the operator's link weight (topology document links[].weight): what crossing the link
-- costs hop-count routing, and the base of the key-aware cost. Finite, > 0 and at most 1e6;
-- existing links weigh 1 (one hop), which routes exactly as before.
ALTER TABLE links
  ADD COLUMN weight double precision NOT NULL DEFAULT 1
    CHECK (weight > 0 AND weight <= 1e6);
