-- API keys may be restricted to device types (a JSON array of their IDs; NULL reaches every
-- type), may expire (Unix microseconds; NULL never), and show the address of their last use.
ALTER TABLE api_keys ADD COLUMN device_type_ids TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN last_used_ip TEXT;
