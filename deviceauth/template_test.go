package deviceauth_test

import "devreg/store"

// The new SQLite databases of these tests start as copies of one migrated once, rather than each
// running every migration (store.UseMigratedTemplate).
func init() { store.UseMigratedTemplate() }
