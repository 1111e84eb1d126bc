-- An API key's name is unique in its account (issue 25): the key list, the audit log and a
-- revocation name a key by it, and two keys of one name cannot be told apart there. Keys that
-- share a name in a database made before keep the oldest's name; each later one gets its ID
-- added, "line-3 station (key_…)", which is unique because IDs are, and still shows what it was.
UPDATE api_keys SET name = name || ' (' || id || ')'
WHERE id IN (
	SELECT id FROM (
		SELECT id, ROW_NUMBER() OVER (PARTITION BY account_id, name ORDER BY created_at, id) AS n FROM api_keys
	) AS ranked
	WHERE n > 1
);
CREATE UNIQUE INDEX api_keys_account_name ON api_keys (account_id, name);
