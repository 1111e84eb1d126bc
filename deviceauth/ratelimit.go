package deviceauth

import "devreg/internal/ratelimit"

// LimitKeys counts the introspections of each admin, register or read API key against l, the
// limiter the Operations API counts the same keys' calls with. Without it, keys are not limited.
func (h *Handler) LimitKeys(l *ratelimit.Limiter) { h.limits = l }
