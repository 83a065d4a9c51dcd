-- 0008: leadership of one controller among several sharing this database (high availability,
-- docs/high-availability.md). One row: who holds the lease, until when (by the database's clock,
-- never a controller's), and the fencing epoch of its term, taken from controller_epoch_seq
-- (0005), so that terms and Ck epochs only ever grow. A controller's writes are fenced on this row
-- (PgStore: holder, epoch and a live lease, checked FOR SHARE in the write's transaction).
CREATE TABLE controller_leader (
  id            integer     PRIMARY KEY CHECK (id = 1),
  holder        text,
  epoch         bigint      NOT NULL DEFAULT 0,
  lease_expires timestamptz NOT NULL DEFAULT '-infinity',
  renewed_at    timestamptz,
  ck_address    text        NOT NULL DEFAULT '',
  api_address   text        NOT NULL DEFAULT ''
);
INSERT INTO controller_leader (id) VALUES (1);
