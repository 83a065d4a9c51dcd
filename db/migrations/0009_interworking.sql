-- 0009: interworking between QKDNs (issue 16, ITU-T Y.3818; docs/topology.md "Interworking",
-- docs/cxi.md). The network's QKDN ID, gateway KMs, inter-QKDN links from a local gateway KM to a
-- KM of another QKDN named (peer_qkdn_id, peer_km_id), and the peer controllers with their Cxi
-- endpoint, certificate identity and policy. Replaced with the topology document (one
-- transaction). Live Cxi state (sessions, reachability announced by peers) is not stored: it is
-- learnt again from the peers after a restart.
ALTER TABLE topology_meta
  ADD COLUMN qkdn_id text NOT NULL DEFAULT '';

ALTER TABLE kms
  ADD COLUMN gateway boolean NOT NULL DEFAULT false;

CREATE TABLE peers (
  qkdn_id         text PRIMARY KEY CHECK (qkdn_id <> ''),
  endpoint        text NOT NULL DEFAULT '',
  identity        text NOT NULL UNIQUE CHECK (identity <> ''),
  reachable_saes  text[] NOT NULL DEFAULT '{}' CHECK (array_position(reachable_saes, NULL) IS NULL),
  key_rate_share  double precision NOT NULL DEFAULT 0
                  CHECK (key_rate_share >= 0 AND key_rate_share <= 1),
  ord             integer NOT NULL
);

-- The local end is a gateway KM of this network; the far end is only a name in the peer's QKDN.
CREATE TABLE inter_qkdn_links (
  link_id       text PRIMARY KEY CHECK (link_id <> ''),
  km_id         text NOT NULL REFERENCES kms (km_id),
  peer_qkdn_id  text NOT NULL REFERENCES peers (qkdn_id),
  peer_km_id    text NOT NULL CHECK (peer_km_id <> ''),
  key_rate_bps  double precision NOT NULL DEFAULT 0 CHECK (key_rate_bps >= 0),
  ord           integer NOT NULL
);
CREATE INDEX inter_qkdn_links_km_idx ON inter_qkdn_links (km_id);
