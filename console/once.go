package console

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Pages that show a secret once (a new API key, a generated credential secret, an enrollment
// group's key) answer their form post with a redirect, so that reloading the page the browser
// lands on sends no second post and makes no second key. The post leaves what it made here, and
// the page it redirects to takes it out: one read, within onceLifetime, by the session that made
// it. Only a random reference travels in the address; the secret itself stays in this process's
// memory and is never written anywhere. A server restarted in between, or another server behind
// the same load balancer, answers that the secret was shown already.
type onceStore struct {
	mu      sync.Mutex
	entries map[string]onceEntry
	now     func() time.Time
}

type onceEntry struct {
	session [32]byte // SHA-256 of the session cookie that made it
	page    string   // the path of the page that may show it
	value   any
	expires time.Time
}

const (
	// onceLifetime is how long a secret waits for its page: the redirect follows at once, so a
	// minute is plenty even on a slow phone.
	onceLifetime = time.Minute
	// maxOnce bounds the memory secrets waiting for their pages take, and maxOncePerSession
	// what one session can take of it; past either, the oldest waiting secret is dropped.
	maxOnce           = 10_000
	maxOncePerSession = 16
	// onceParam is the query parameter that carries the reference.
	onceParam = "shown"
)

func newOnceStore(now func() time.Time) *onceStore {
	return &onceStore{entries: map[string]onceEntry{}, now: now}
}

func sessionOf(r *http.Request) [32]byte {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256([]byte(c.Value))
}

// put keeps v for the page at path page (unescaped) and returns the address to redirect to.
func (o *onceStore) put(r *http.Request, page string, v any) string {
	ref := make([]byte, 18)
	rand.Read(ref)
	id := base64.RawURLEncoding.EncodeToString(ref)
	session, now := sessionOf(r), o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	mine, oldest, oldestMine := 0, "", ""
	for k, e := range o.entries {
		if !now.Before(e.expires) {
			delete(o.entries, k)
			continue
		}
		if oldest == "" || e.expires.Before(o.entries[oldest].expires) {
			oldest = k
		}
		if e.session == session {
			mine++
			if oldestMine == "" || e.expires.Before(o.entries[oldestMine].expires) {
				oldestMine = k
			}
		}
	}
	switch {
	case mine >= maxOncePerSession:
		delete(o.entries, oldestMine)
	case len(o.entries) >= maxOnce:
		delete(o.entries, oldest)
	}
	o.entries[id] = onceEntry{session: session, page: page, value: v, expires: now.Add(onceLifetime)}
	return (&url.URL{Path: page, RawQuery: url.Values{onceParam: {id}}.Encode()}).String()
}

// take returns what put kept for this request's page and session, and forgets it. shown says
// whether the request asked for one at all (it names a reference); ok whether it was there.
func (o *onceStore) take(r *http.Request) (v any, shown, ok bool) {
	id := r.URL.Query().Get(onceParam)
	if id == "" {
		return nil, false, false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	e, found := o.entries[id]
	// Another session's reference is not its to read, nor to spend.
	if !found || e.session != sessionOf(r) || e.page != r.URL.Path {
		return nil, true, false
	}
	delete(o.entries, id)
	if !o.now().Before(e.expires) {
		return nil, true, false
	}
	return e.value, true, true
}
