package registry

import (
	"context"
	"testing"

	"devreg/credential"
	"devreg/internal/passwordtest"
	"devreg/store"
)

// OpenTestService is the one way the tests of this package, internal and external, open a
// registry: it opens the database at url (as pgtest.Each gives it) and returns a service over it,
// with one server key, k1, the same in every test, and the store; both are closed when the test
// ends. Called again on the same url, it opens another server of the same registry. wrap, if
// given, makes the store the service uses out of the database: a test's store that holds up or
// breaks some of its calls.
func OpenTestService(t testing.TB, url string, wrap ...func(*store.DB) Store) (*Service, *store.DB) {
	t.Helper()
	db, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	keys, err := credential.NewKeyring(credential.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	var st Store = db
	for _, w := range wrap {
		st = w(db)
	}
	svc := New(st, keys)
	svc.HashPassword = passwordtest.Hash
	t.Cleanup(svc.Close)
	return svc, db
}
