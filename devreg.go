// Package devreg is the domain of the device registration service: accounts, device types,
// devices, batches and API keys, the errors every layer speaks, and the caller on whose behalf a
// request runs. Technologies (SQL, HTTP, HTML) live in the adapter packages around it.
package devreg

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"time"
)

// Scope is what an API key or console session may do.
type Scope string

// The scopes, from most to least powerful.
const (
	ScopeAdmin    Scope = "admin"    // everything
	ScopeRegister Scope = "register" // read, create device types, register devices (no replace, delete, disable, key management)
	ScopeRead     Scope = "read"     // read only
	// ScopeBroker is an MQTT broker's: only the broker endpoints answer to it, for the devices of
	// its account; every call of the Operations API refuses it.
	ScopeBroker Scope = "broker"
)

// Valid reports whether s is one of the known scopes.
func (s Scope) Valid() bool {
	return s == ScopeAdmin || s == ScopeRegister || s == ScopeRead || s == ScopeBroker
}

// Allows reports whether a caller with scope s may do what needs scope need. The scopes from
// read to admin each allow what the ones below allow; broker allows only broker.
func (s Scope) Allows(need Scope) bool {
	if s == ScopeBroker || need == ScopeBroker {
		return s == need
	}
	rank := map[Scope]int{ScopeRead: 1, ScopeRegister: 2, ScopeAdmin: 3}
	return rank[s] >= rank[need] && rank[need] > 0
}

// Source says through which door a request came in; batches record it.
type Source string

// The sources of a registration.
const (
	SourceAPI     Source = "api"
	SourceConsole Source = "console"
	// SourceCLI is the server's command line, working offline on the server's data.
	SourceCLI Source = "cli"
)

// Caller is the authenticated principal a request runs for: an API key or a console user.
type Caller struct {
	AccountID string
	Scope     Scope
	Name      string // the API key's name or the user's email; batches record it as created_by
	Source    Source
	// KeyID is the API key's ID; empty for a console user.
	KeyID string
	// UserID is the console user's ID; empty for an API key.
	UserID string
	// DeviceTypeIDs, when not nil, are the only device types the caller's key reaches: their
	// devices, batches and the types themselves. Everything else does not exist for it.
	DeviceTypeIDs []string
	// TrustsBrokerTLS is set for a broker key made with trusts_broker_tls: devreg takes a login
	// that carries only a common name from it as a device whose certificate the broker verified.
	TrustsBrokerTLS bool
}

// Reaches reports whether the caller may see objects of device type typeID.
func (c Caller) Reaches(typeID string) bool {
	return c.DeviceTypeIDs == nil || slices.Contains(c.DeviceTypeIDs, typeID)
}

type callerKey struct{}

// NewContextWithCaller returns a copy of ctx that carries c.
func NewContextWithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFromContext returns the caller carried by ctx, if any.
func CallerFromContext(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok && c.AccountID != ""
}

// Account is one manufacturer's space: its device types, devices, keys and users live in it.
type Account struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// NormalizeEmail returns the form of an email address that devreg stores and looks up: an
// email belongs to one user, whatever its case.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// User is a person who logs in to the console of one account, with a role.
type User struct {
	ID           string     `json:"id"`
	AccountID    string     `json:"-"`
	Email        string     `json:"email"`
	Role         Role       `json:"role"`
	PasswordHash string     `json:"-"` // "" until an invitation sets it: no password matches it
	CreatedAt    time.Time  `json:"created_at"`
	LastLoginAt  *time.Time `json:"last_login_at"`
}

// APIKey is a credential for the Operations API. The key itself is shown once and stored only hashed.
type APIKey struct {
	ID         string     `json:"id"`
	AccountID  string     `json:"-"`
	Name       string     `json:"name"`
	Scope      Scope      `json:"scope"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	// DeviceTypeIDs, when not null, are the only device types the key reaches.
	DeviceTypeIDs []string `json:"device_type_ids"`
	// ExpiresAt, when set, is when the key stops working.
	ExpiresAt *time.Time `json:"expires_at"`
	// LastUsedIP is the client address of the key's last use, as the server saw it.
	LastUsedIP *string `json:"last_used_ip"`
	// TrustsBrokerTLS says that the broker holding this key verifies device certificates itself
	// (only a broker key may): a login from it with a common name and no secret is a device that
	// proved itself with a certificate chaining to the broker's CA.
	TrustsBrokerTLS bool   `json:"trusts_broker_tls"`
	Key             string `json:"key,omitempty"` // set only in the answer that creates it
	Hash            []byte `json:"-"`
}

// NewAPIKey is what creating an API key takes: a name and a scope, and optionally the device
// types it is restricted to, when it expires and, for a broker key, whether devreg trusts the
// broker's verification of device certificates.
type NewAPIKey struct {
	Name            string
	Scope           Scope
	DeviceTypeIDs   []string
	ExpiresAt       *time.Time
	TrustsBrokerTLS bool
}

// APIKeyUpdate holds the fields of a PATCH of an API key; nil fields stay as they are, and
// ClearExpiry removes the expiry.
type APIKeyUpdate struct {
	Name        *string
	ExpiresAt   *time.Time
	ClearExpiry bool
}

type requestIDKey struct{}

// NewContextWithRequestID returns a copy of ctx that carries the ID of the request it serves.
func NewContextWithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestIDFromContext returns the request ID carried by ctx, or "".
func RequestIDFromContext(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

type clientIPKey struct{}

// NewContextWithClientIP returns a copy of ctx that carries the address of the client the request
// came from, as the server saw it (behind a trusted proxy, the address the proxy names).
func NewContextWithClientIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, clientIPKey{}, ip)
}

// ClientIPFromContext returns the client address carried by ctx, or "".
func ClientIPFromContext(ctx context.Context) string {
	ip, _ := ctx.Value(clientIPKey{}).(string)
	return ip
}

type clientCertsKey struct{}

// NewContextWithClientCertificates returns a copy of ctx that carries the certificate chain the
// client presented, leaf first: on devreg's own TLS connection, or in the header a trusted proxy
// set. The chain is what the client sent, not yet verified against anything.
func NewContextWithClientCertificates(ctx context.Context, chain []*x509.Certificate) context.Context {
	return context.WithValue(ctx, clientCertsKey{}, chain)
}

// ClientCertificatesFromContext returns the client's certificate chain carried by ctx, leaf
// first, or nil when the client presented none. The certificates are unverified.
func ClientCertificatesFromContext(ctx context.Context) []*x509.Certificate {
	chain, _ := ctx.Value(clientCertsKey{}).([]*x509.Certificate)
	return chain
}
