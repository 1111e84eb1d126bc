package server

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"golang.org/x/sync/singleflight"

	"devreg/internal/respond"
)

// readyTimeout bounds a readiness check: a load balancer asks every few seconds, and a database
// that does not answer within this is not one to send traffic to.
const readyTimeout = 2 * time.Second

// readiness answers GET /readyz: 200 while the database answers and carries every migration of
// this build, else 503 saying which. It needs no credentials and is not rate limited (a load
// balancer polling it must never be refused), so the checks of requests that arrive while one
// runs share its result: however many ask at once, the database sees one query.
type readiness struct {
	s     *Server
	group singleflight.Group
}

func (rd *readiness) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ch := rd.group.DoChan("ready", func() (any, error) {
		// Not the request's context: the check is shared, and one caller hanging up must not
		// fail it for the others.
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		return nil, rd.s.db.Ready(ctx)
	})
	var err error
	select {
	case res := <-ch:
		err = res.Err
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		rd.s.log.Warn("not ready", "request_id", w.Header().Get("X-Request-ID"), "err", err)
		respond.WriteJSONError(w, r, rd.s.log, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"status": "ready"})
}
