package deviceauth

import "devreg/internal/authn"

// AuthenticateWith lets devices and the services that introspect their tokens in through a,
// which the server shares among its surfaces (and whose limiter counts the introspections of each
// admin, register or read API key against the bucket the Operations API counts the same key's
// calls in). Without it, keys are not limited.
func (h *Handler) AuthenticateWith(a *authn.Authenticator) { h.auth = a }
