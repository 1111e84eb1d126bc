-- A broker key may vouch for the device certificates its broker verified (issue 23): a login from
-- it that carries only a common name is taken as that device. Off for every key made before.
ALTER TABLE api_keys ADD COLUMN trusts_broker_tls BOOLEAN NOT NULL DEFAULT false;
