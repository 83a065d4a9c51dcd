-- 0003: optional site coordinates of a KM (topology document kms[].lat/lon, WGS 84 degrees),
-- used by the network view to place KMs. Both or neither.
ALTER TABLE kms
  ADD COLUMN lat double precision CHECK (lat >= -90 AND lat <= 90),
  ADD COLUMN lon double precision CHECK (lon >= -180 AND lon <= 180),
  ADD CONSTRAINT kms_lat_lon_together CHECK ((lat IS NULL) = (lon IS NULL));
