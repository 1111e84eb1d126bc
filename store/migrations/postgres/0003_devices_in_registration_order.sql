-- Devices are listed in registration order (or by device ID when searching a prefix): the type,
-- batch and account indexes take new keys at their ends; only the primary key is random.
ALTER TABLE devices ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
DROP INDEX devices_type;
DROP INDEX devices_batch;
CREATE INDEX devices_account ON devices (account_id, seq);
CREATE INDEX devices_type ON devices (account_id, device_type_id, seq);
CREATE INDEX devices_batch ON devices (account_id, batch_id, seq);
