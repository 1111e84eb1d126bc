-- Just-in-time registration (issue 23) puts the devices that register themselves into one batch
-- per device type and UTC day, which each such registration finds again by this index.
CREATE INDEX batches_auto_register ON batches (account_id, device_type_id, created_at) WHERE source = 'auto_register';
