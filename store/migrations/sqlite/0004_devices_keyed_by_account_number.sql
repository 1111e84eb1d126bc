-- The unique index of device IDs takes its keys in random order, so a registration writes pages
-- all over it. Keying it by a small account number rather than the 20-character account ID makes
-- it about half as big.
ALTER TABLE accounts ADD COLUMN num INTEGER;
UPDATE accounts SET num = rowid;
CREATE UNIQUE INDEX accounts_num ON accounts (num);
ALTER TABLE devices ADD COLUMN account_num INTEGER NOT NULL DEFAULT 0;
UPDATE devices SET account_num = (SELECT num FROM accounts WHERE accounts.id = devices.account_id);
DROP INDEX devices_id;
CREATE UNIQUE INDEX devices_id ON devices (account_num, device_id);
