-- The MQTT topic filters a device type's devices may publish to and subscribe to: JSON arrays of
-- strings, with {device_id}, {account_id} and {device_type_id} replaced per device.
ALTER TABLE device_types ADD COLUMN mqtt_publish TEXT NOT NULL DEFAULT '["devices/{device_id}/#"]';
ALTER TABLE device_types ADD COLUMN mqtt_subscribe TEXT NOT NULL DEFAULT '["devices/{device_id}/#"]';
