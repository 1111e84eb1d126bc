package httpapi

import "devreg/internal/authn"

// AuthenticateWith lets callers in through a, which the server shares among its surfaces (and
// whose limiter counts the requests of admin, register and read keys: beyond its limit a key
// gets 429, and every answer to such a key carries the RateLimit-* header fields). Without it,
// keys are not limited.
func (h *Handler) AuthenticateWith(a *authn.Authenticator) { h.auth = a }
