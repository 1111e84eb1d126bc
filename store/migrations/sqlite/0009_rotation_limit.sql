-- How many times a device of the type may rotate its secret itself in an hour (issue 22: one
-- leaked secret rotated 11,693 times in 20 s, an audit entry each).
ALTER TABLE device_types ADD COLUMN max_rotations_per_hour INTEGER NOT NULL DEFAULT 5;
