-- 0005: the controller epoch (ck-protocol.md clause 2) from a sequence. Each controller start takes
-- nextval, so epochs only ever grow and no two starts share one, whatever the wall clocks of the
-- controllers say. The sequence starts at the database's wall clock in ms at migration time:
-- controllers before this migration used their start's wall time in ms as the epoch, and an agent
-- that saw one of those must not refuse the first epoch the sequence hands out.
CREATE SEQUENCE controller_epoch_seq AS bigint MINVALUE 1;
SELECT setval('controller_epoch_seq',
              GREATEST(1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint));
