package store

// Attacks on the spread look-up of a big registration (register_direct.go lookUp, the dialects'
// beginSnapshots): answers that no single instant of the database gave, slots and connections
// not given back, connection state left behind.

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
)

var atkKey = credential.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}

// atkSetUp makes an account and a device type on s and returns the account's ID.
func atkSetUp(t testing.TB, s *DB) string {
	t.Helper()
	ctx := context.Background()
	a := devreg.Account{ID: "acc_atk", Name: "atk", CreatedAt: time.Unix(0, 0)}
	u := devreg.User{ID: "usr_atk", AccountID: a.ID, Email: "atk@example.test", PasswordHash: "x"}
	k := devreg.APIKey{ID: "key_atk", AccountID: a.ID, Name: "owner", Scope: devreg.ScopeAdmin, Hash: credential.HashAPIKey("drk_atk")}
	if err := s.CreateAccount(ctx, a, u, k); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDeviceType(ctx, devreg.DeviceType{ID: "dt_1", AccountID: a.ID, Name: "t", MinSecretLength: 8}); err != nil {
		t.Fatal(err)
	}
	return a.ID
}

type atkList []devreg.StagedEntry

func (l atkList) Len() int { return len(l) }
func (atkList) Release()   {}
func (l atkList) Replay(chunk int, fn func([]devreg.StagedEntry) error) error {
	for start := 0; start < len(l); start += chunk {
		if err := fn(l[start:min(start+chunk, len(l))]); err != nil {
			return err
		}
	}
	return nil
}

// atkEntries returns n entries with IDs prefix-00000... and secret.
func atkEntries(acc, prefix string, n int, secret string) atkList {
	l := make(atkList, n)
	for i := range l {
		id := fmt.Sprintf("%s-%05d", prefix, i)
		l[i] = devreg.StagedEntry{Index: i, Line: i + 1, DeviceID: id, Hashes: credential.Hash(atkKey, acc, id, secret)}
	}
	return l
}

func atkReg(acc string, l atkList, dryRun bool) devreg.Registration {
	reg := devreg.Registration{AccountID: acc, DeviceTypeID: "dt_1", KeyIDs: []string{atkKey.ID}, DryRun: dryRun,
		Batch: devreg.Batch{ID: credential.RandomID("bat", 8), CreatedAt: time.Unix(1, 0), CreatedBy: "test", Source: devreg.SourceAPI}}
	for i := range l {
		if devreg.Sampled(i) {
			reg.Sample = append(reg.Sample, l[i].DeviceID)
		}
	}
	return reg
}

// atkRegister registers l and reports what decide was given and whether the stage was taken.
func atkRegister(ctx context.Context, s *DB, reg devreg.Registration, l atkList, decide func(devreg.Found) (devreg.Decision, error)) (res devreg.RegisterResult, staged bool, err error) {
	ctx, timings := devreg.NewContextWithTimings(ctx)
	res, err = s.Register(ctx, reg, l, func(f devreg.Found) (devreg.Decision, error) {
		staged = strings.Contains(timings.Header(), "stage;")
		return decide(f)
	})
	return res, staged, err
}

func acceptAll(devreg.Found) (devreg.Decision, error) { return devreg.Decision{}, nil }

// atkProcs gives the test n procs, so that a look-up takes as many connections as slots allow.
func atkProcs(t *testing.T, n int) {
	old := runtime.GOMAXPROCS(n)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
}

// atkIdle waits until s's pool has no connection in use and no registration slot is taken.
func atkIdle(t *testing.T, s *DB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		inUse, slots := s.db.Stats().InUse, len(s.regs.slots)
		if inUse == 0 && slots == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the requests: %d connections in use, %d registration slots taken", inUse, slots)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var errAtkStop = errors.New("attack: nothing to write")

// TestLookUpAttackOneInstant: while a writer keeps exactly one of the first and the last device
// of a big registration changed (moving the change from one to the other in one transaction),
// no resend may be told that every device is unchanged; and while one device ID moves between
// the first and the last entry of a dry run of new devices, no dry run may be told that all are
// new. The writer is another process (a second DB on the same database) or this one.
func TestLookUpAttackOneInstant(t *testing.T) {
	atkProcs(t, 4)
	pgtest.Each(t, func(t *testing.T, url string) {
		for _, writerIn := range []string{"other-process", "same-process"} {
			t.Run(writerIn, func(t *testing.T) {
				url := pgtest.NewDatabaseLike(t, url)
				ctx := context.Background()
				s := openForTest(t, url)
				w := s
				if writerIn == "other-process" {
					w = openForTest(t, url)
				}
				acc := atkSetUp(t, s)
				n := 12000
				if _, sqlite := s.d.(*sqliteDialect); sqlite {
					n = 4000 // 16 of SQLite's look-up statements
				}
				lot, fresh := atkEntries(acc, "lot", n, "secret-one"), atkEntries(acc, "new", n, "secret-one")
				if res, err := s.Register(ctx, atkReg(acc, lot, false), lot, acceptAll); err != nil || res.Created != int64(n) {
					t.Fatalf("register: %+v %v", res, err)
				}
				// One of the fresh IDs registered: it moves between the first and the last.
				mover := atkList{fresh[0]}
				if res, err := s.Register(ctx, atkReg(acc, mover, false), mover, acceptAll); err != nil || res.Created != 1 {
					t.Fatalf("register: %+v %v", res, err)
				}
				var num int64
				if err := s.h.QueryRowContext(ctx, `SELECT num FROM accounts WHERE id = ?`, acc).Scan(&num); err != nil {
					t.Fatal(err)
				}
				first, last := lot[0], lot[n-1]
				good := func(e devreg.StagedEntry) []byte { return e.Hashes }
				bad := []byte("not a hash of anything, not at all")
				toggle := func(i int) error {
					return w.inTx(ctx, func(tx handle) error {
						a, b := first, last
						if i%2 == 1 {
							a, b = b, a
						}
						if _, err := tx.ExecContext(ctx, `UPDATE devices SET secret_hash = ? WHERE account_num = ? AND device_id = ?`, bad, num, a.DeviceID); err != nil {
							return err
						}
						if _, err := tx.ExecContext(ctx, `UPDATE devices SET secret_hash = ? WHERE account_num = ? AND device_id = ?`, good(b), num, b.DeviceID); err != nil {
							return err
						}
						from, to := fresh[0].DeviceID, fresh[n-1].DeviceID
						if i%2 == 1 {
							from, to = to, from
						}
						_, err := tx.ExecContext(ctx, `UPDATE devices SET device_id = ? WHERE account_num = ? AND device_id = ?`, to, num, from)
						return err
					})
				}
				if err := toggle(0); err != nil {
					t.Fatal(err)
				}
				stop, done := make(chan struct{}), make(chan error, 1)
				var toggles atomic.Int64
				go func() {
					for i := 1; ; i++ {
						select {
						case <-stop:
							done <- nil
							return
						default:
						}
						if err := toggle(i); err != nil {
							done <- err
							return
						}
						toggles.Add(1)
						time.Sleep(200 * time.Microsecond) // room for SQLite's readers to begin
					}
				}()
				var lies, lookedUp, staged atomic.Int64
				var wg sync.WaitGroup
				until := time.Now().Add(4 * time.Second)
				requesters := 2
				if _, sqlite := s.d.(*sqliteDialect); sqlite {
					requesters = 1 // SQLite's two slots: a second request would take the look-up's second connection
				}
				for g := range requesters {
					wg.Go(func() {
						for i := 0; time.Now().Before(until); i++ {
							l, dry := lot, (g+i)%3 == 0 // a dry run's resend takes no write lock first
							if (g+i)%3 == 1 {
								l, dry = fresh, true
							}
							_, st, err := atkRegister(ctx, s, atkReg(acc, l, dry), l, func(f devreg.Found) (devreg.Decision, error) {
								if f.Unchanged == f.Total || f.New == f.Total {
									lies.Add(1)
									t.Errorf("dry run %v: told %+v although one device was always changed or registered", dry, f)
								}
								return devreg.Decision{}, errAtkStop
							})
							if st {
								staged.Add(1)
							} else if err != nil && errors.Is(err, errAtkStop) {
								lookedUp.Add(1)
							}
							if err != nil && !errors.Is(err, errAtkStop) {
								t.Errorf("register: %v", err)
								return
							}
						}
					})
				}
				wg.Wait()
				close(stop)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				t.Logf("%d toggles; %d requests decided on the look-up, %d on the stage; %d lies", toggles.Load(), lookedUp.Load(), staged.Load(), lies.Load())
				atkIdle(t, s)
			})
		}
	})
}

// TestLookUpAttackOtherProcessWriting: SQLite. While another process holds the database's write
// lock (a long write, an import), a dry run of new devices writes nothing and needs no lock: it
// must be answered at once, as one connection's look-up was (a deferred read-only transaction),
// rather than wait for the lock under busy_timeout (10 s) and then fail with SQLITE_BUSY.
// (A resend that writes is not asked: its direct insert takes the write lock first, as before.)
func TestLookUpAttackOtherProcessWriting(t *testing.T) {
	atkProcs(t, 4)
	url := "sqlite:" + t.TempDir() + "/devreg.db"
	ctx := context.Background()
	s, other := openForTest(t, url), openForTest(t, url)
	acc := atkSetUp(t, s)
	const n = 3000
	lot := atkEntries(acc, "lot", n, "secret-one")
	if res, err := s.Register(ctx, atkReg(acc, lot, false), lot, acceptAll); err != nil || res.Created != n {
		t.Fatalf("register: %+v %v", res, err)
	}
	w, err := other.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.ExecContext(ctx, `INSERT INTO failures (key, window_start, count) VALUES ('x', 0, 1)`); err != nil {
		t.Fatal(err)
	}
	defer w.Rollback() // held until the dry runs have answered
	for _, l := range []atkList{atkEntries(acc, "new", n, "secret-one"), lot} {
		start := time.Now()
		res, _, err := atkRegister(ctx, s, atkReg(acc, l, true), l, acceptAll)
		took := time.Since(start)
		t.Logf("dry run while another process writes: %+v, %v, in %v", res, err, took.Round(time.Millisecond))
		if err != nil || res.Created+res.Unchanged != n || took > 2*time.Second {
			t.Errorf("dry run while another process holds the write lock: %+v, %v, after %v; want an answer at once", res, err, took.Round(time.Millisecond))
		}
	}
}

// TestLookUpAttackLeaks: look-ups that end every way but well (the client gone at any moment,
// a request found mixed half way, decide refusing on the look-up and on the stage), many at once,
// give back every registration slot and connection, leave SQLite's connections as they were
// (page cache, no transaction open), and leave PostgreSQL's stage connection fit for the stage:
// registrations, resends, a mixed replace and device logins work after, with the right counts.
func TestLookUpAttackLeaks(t *testing.T) {
	atkProcs(t, 4)
	pgtest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := openForTest(t, url)
		acc := atkSetUp(t, s)
		const n = 6000
		lot, fresh := atkEntries(acc, "lot", n, "secret-one"), atkEntries(acc, "new", n, "secret-one")
		if res, err := s.Register(ctx, atkReg(acc, lot, false), lot, acceptAll); err != nil || res.Created != n {
			t.Fatalf("register: %+v %v", res, err)
		}
		changed := make(atkList, n)
		copy(changed, lot)
		changed[n-1] = atkEntries(acc, "lot", n, "secret-two")[n-1]
		refuse := func(devreg.Found) (devreg.Decision, error) { return devreg.Decision{}, errAtkStop }
		var wg sync.WaitGroup
		var cancelled, refused, other atomic.Int64
		for g := range 3 {
			wg.Go(func() {
				for i := range 30 {
					kind := (g + i) % 6
					l, dry, decide := lot, false, acceptAll
					switch kind {
					case 1:
						l, dry = fresh, true
					case 2:
						l = changed // mixed: errMixed, then the stage, which decide refuses
						decide = refuse
					case 3:
						decide = refuse // refused on the look-up
					case 4:
						l, dry, decide = fresh, true, refuse
					case 5:
						l = changed
					}
					rctx, cancel := context.WithCancel(ctx)
					if kind == 0 || kind == 1 || kind == 5 {
						time.AfterFunc(time.Duration(i%7)*3*time.Millisecond, cancel)
					}
					_, _, err := atkRegister(rctx, s, atkReg(acc, l, dry), l, decide)
					gone := rctx.Err() != nil
					cancel()
					switch {
					case err == nil:
					case errors.Is(err, context.Canceled), gone && errors.Is(err, driver.ErrBadConn):
						cancelled.Add(1)
					case errors.Is(err, errAtkStop):
						refused.Add(1)
					default:
						other.Add(1)
						t.Errorf("kind %d (client gone: %v): %v", kind, gone, err)
					}
				}
			})
		}
		wg.Wait()
		t.Logf("%d cancelled, %d refused, %d other errors", cancelled.Load(), refused.Load(), other.Load())
		atkIdle(t, s)
		if _, sqlite := s.d.(*sqliteDialect); sqlite {
			atkCheckSQLiteConns(t, s)
		}
		// Everything still works, and the requests above wrote nothing but their own.
		if res, err := s.Register(ctx, atkReg(acc, lot, false), lot, acceptAll); err != nil || res.Unchanged != n {
			t.Errorf("resend after: %+v, %v", res, err)
		}
		if res, err := s.Register(ctx, atkReg(acc, fresh, true), fresh, acceptAll); err != nil || res.Created != n || !res.DryRun {
			t.Errorf("dry run after: %+v, %v", res, err)
		}
		replace := atkReg(acc, changed, false)
		replace.Unchanged = devreg.UnchangedValidCredential
		res, staged, err := atkRegister(ctx, s, replace, changed, func(devreg.Found) (devreg.Decision, error) { return devreg.Decision{Replace: true}, nil })
		if err != nil || res.Replaced != 1 || res.Unchanged != n-1 || !staged {
			t.Errorf("a mixed replace after: %+v, staged %v, %v", res, staged, err)
		}
		if a, err := s.DeviceAuth(ctx, acc, lot[n-1].DeviceID); err != nil || len(a.Credentials) == 0 {
			t.Errorf("device login after: %+v, %v", a, err)
		}
		if res, err := s.Register(ctx, atkReg(acc, fresh, false), fresh, acceptAll); err != nil || res.Created != n {
			t.Errorf("new devices after: %+v, %v", res, err)
		}
		dt, err := s.DeviceType(ctx, acc, "dt_1")
		if err != nil || dt.DeviceCount != 2*n {
			t.Errorf("device type counts %d devices (%v), want %d", dt.DeviceCount, err, 2*n)
		}
		atkIdle(t, s)
	})
}

// atkCheckSQLiteConns takes every connection of the pool and checks that each has the page
// cache of an idle connection and no transaction open.
func atkCheckSQLiteConns(t *testing.T, s *DB) {
	t.Helper()
	ctx := context.Background()
	var conns []interface{ Close() error }
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 8 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		var size int
		if err := c.QueryRowContext(ctx, `PRAGMA cache_size`).Scan(&size); err != nil {
			t.Fatal(err)
		}
		if size != -cacheKiB {
			t.Errorf("pooled connection %d: cache_size %d, want %d", i, size, -cacheKiB)
		}
		if _, err := c.ExecContext(ctx, `BEGIN`); err != nil {
			t.Errorf("pooled connection %d: a transaction left open: %v", i, err)
		} else {
			c.ExecContext(ctx, `ROLLBACK`)
		}
	}
}

// TestLookUpAttackParallel: many resends and dry runs at once, mixed with registrations of new
// devices, re-registrations under replace and device logins (run it with -race). Each resend of
// an untouched file is told "unchanged", each dry run "created", with nothing written; the type
// counts what was registered; every slot and connection goes back.
func TestLookUpAttackParallel(t *testing.T) {
	atkProcs(t, 4)
	pgtest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := openForTest(t, url)
		acc := atkSetUp(t, s)
		const n = 3000
		lot, fresh := atkEntries(acc, "lot", n, "secret-one"), atkEntries(acc, "new", n, "secret-one")
		churn := atkEntries(acc, "churn", n, "secret-one")
		for _, l := range []atkList{lot, churn} {
			if res, err := s.Register(ctx, atkReg(acc, l, false), l, acceptAll); err != nil || res.Created != n {
				t.Fatalf("register: %+v %v", res, err)
			}
		}
		var created atomic.Int64
		created.Store(2 * n)
		var wg sync.WaitGroup
		until := time.Now().Add(2 * time.Second)
		for g := range 6 {
			wg.Go(func() {
				for i := 0; time.Now().Before(until); i++ {
					switch g {
					case 0, 1:
						if res, err := s.Register(ctx, atkReg(acc, lot, false), lot, acceptAll); err != nil || res != (devreg.RegisterResult{Unchanged: n}) {
							t.Errorf("resend: %+v, %v", res, err)
							return
						}
					case 2:
						if res, err := s.Register(ctx, atkReg(acc, fresh, true), fresh, acceptAll); err != nil || res != (devreg.RegisterResult{Created: n, DryRun: true}) {
							t.Errorf("dry run: %+v, %v", res, err)
							return
						}
					case 3:
						l := atkEntries(acc, fmt.Sprintf("more%d", i), 300+i%2*700, "secret-one")
						res, err := s.Register(ctx, atkReg(acc, l, false), l, acceptAll)
						if err != nil || res.Created != int64(len(l)) {
							t.Errorf("new devices: %+v, %v", res, err)
							return
						}
						created.Add(res.Created)
					case 4:
						// The churn lot's secrets change, then change back, under replace.
						l := atkEntries(acc, "churn", n, fmt.Sprint("secret-", i%2))
						reg := atkReg(acc, l, false)
						reg.Unchanged = devreg.UnchangedValidCredential
						res, err := s.Register(ctx, reg, l, func(devreg.Found) (devreg.Decision, error) { return devreg.Decision{Replace: true}, nil })
						if err != nil || res.Replaced+res.Unchanged != n {
							t.Errorf("replace: %+v, %v", res, err)
							return
						}
					case 5:
						if _, err := s.DeviceAuth(ctx, acc, lot[i%n].DeviceID); err != nil {
							t.Errorf("device login: %v", err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		atkIdle(t, s)
		if dt, err := s.DeviceType(ctx, acc, "dt_1"); err != nil || dt.DeviceCount != created.Load() {
			t.Errorf("the type counts %d devices (%v), want %d", dt.DeviceCount, err, created.Load())
		}
		if _, err := s.Device(ctx, acc, fresh[0].DeviceID); devreg.ErrorCode(err) != devreg.ENOTFOUND {
			t.Errorf("a dry run wrote a device: %v", err)
		}
		if _, sqlite := s.d.(*sqliteDialect); sqlite {
			atkCheckSQLiteConns(t, s)
		}
	})
}

// TestLookUpAttackPoolFull: SQLite. With all but two of the pool's connections held (by long
// reads), a spread look-up takes the stage's and a slot's, then waits for one more to take the
// write lock with the process's writer turn held: once the reads end, the look-up and the
// writers that queued for the turn all finish.
func TestLookUpAttackPoolFull(t *testing.T) {
	atkProcs(t, 4)
	url := "sqlite:" + t.TempDir() + "/devreg.db"
	ctx := context.Background()
	s := openForTest(t, url)
	acc := atkSetUp(t, s)
	const n = 3000
	fresh := atkEntries(acc, "new", n, "secret-one")
	var held []interface{ Close() error }
	for range 6 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.AfterFunc(1500*time.Millisecond, func() {
		for _, c := range held {
			c.Close()
		}
	})
	tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if res, err := s.Register(tctx, atkReg(acc, fresh, true), fresh, acceptAll); err != nil || res.Created != n {
			t.Errorf("dry run with the pool full: %+v, %v", res, err)
		}
	})
	for i := range 4 {
		wg.Go(func() {
			time.Sleep(100 * time.Millisecond)
			if _, _, err := s.ReserveAttempt(tctx, fmt.Sprint("login-", i), time.Now(), time.Minute); err != nil {
				t.Errorf("a device login's write with the pool full: %v", err)
			}
		})
	}
	wg.Wait()
	atkIdle(t, s)
	atkCheckSQLiteConns(t, s)
}

// TestResendWaitsForNoWriter: a file sent again is answered while another transaction holds the
// turn to write and the account's lock (a big registration inserting, say): it writes nothing,
// so it waits for neither.
func TestResendWaitsForNoWriter(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := openForTest(t, url)
		acc := atkSetUp(t, s)
		const n = 600
		lot := atkEntries(acc, "lot", n, "secret-one")
		if res, err := s.Register(ctx, atkReg(acc, lot, false), lot, acceptAll); err != nil || res.Created != n {
			t.Fatalf("register: %+v %v", res, err)
		}
		unlock, err := s.d.writeLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := s.d.lockAccount(ctx, handle{q: tx, d: s.d}, acc); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if res, err := s.Register(rctx, atkReg(acc, lot, false), lot, acceptAll); err != nil || res.Unchanged != n {
			t.Errorf("a resend while a writer holds the turn and the account: %+v, %v; want unchanged %d at once", res, err, n)
		}
	})
}
