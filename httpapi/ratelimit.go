package httpapi

import "devreg/internal/ratelimit"

// LimitKeys counts every request of an admin, register or read API key against l: beyond its
// limit a key gets 429, and every answer to such a key carries the RateLimit-* header fields.
// Without it, keys are not limited.
func (h *Handler) LimitKeys(l *ratelimit.Limiter) { h.limits = l }
