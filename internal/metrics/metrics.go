// Package metrics holds devreg's domain metrics: what a service's operators watch besides HTTP
// counters. Every figure is an aggregate: no label carries an account, device, key or user, so
// /metrics tells nothing about any one customer, and every label has a fixed, small set of values.
//
// A nil *Metrics counts nothing, so the registry and the handlers work without one (tests, the
// command line's offline commands).
package metrics

import (
	"context"
	"database/sql"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the domain counters of one server.
type Metrics struct {
	tokensIssued    prometheus.Counter
	tokensRefused   *prometheus.CounterVec
	registrations   prometheus.Counter
	devicesReg      *prometheus.CounterVec
	throttledLogins *prometheus.CounterVec
}

// Token refusal reasons: the OAuth error the device was told, except "throttled" for a device
// refused by the failure throttle (which is told invalid_client like a wrong secret).
const (
	RefusedInvalidClient  = "invalid_client"
	RefusedInvalidRequest = "invalid_request"
	RefusedUnsupported    = "unsupported_grant_type"
	RefusedThrottled      = "throttled"
	RefusedEnrollment     = "enrollment_limit"
	RefusedRateLimited    = "rate_limited"
	RefusedServerError    = "server_error"
)

// refusalReasons are the only values of the reason label; anything else counts as server_error,
// so that no value from a request can grow the label's set.
var refusalReasons = map[string]bool{RefusedInvalidClient: true, RefusedInvalidRequest: true, RefusedUnsupported: true,
	RefusedThrottled: true, RefusedEnrollment: true, RefusedRateLimited: true, RefusedServerError: true}

// Throttled login kinds.
const (
	LoginDevice  = "device"  // a device's secret, at the token, rotation or broker endpoints
	LoginConsole = "console" // a console user's password
)

// Sources is what New reads its gauges from.
type Sources struct {
	DB              interface{ Stats() sql.DBStats } // the database pool
	LastSeenBacklog func() int                       // devices and credential uses waiting to be written
	// AuditEntries counts the audit entries of every account, read at each scrape from the
	// database (so the figure is the same on every server of an installation).
	AuditEntries func(ctx context.Context) (int64, error)
}

// New makes the domain metrics and registers them, with gauges over src, on reg.
func New(reg prometheus.Registerer, src Sources) *Metrics {
	m := &Metrics{
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devreg_device_tokens_issued_total", Help: "Device tokens issued at POST /device/v1/token.",
		}),
		tokensRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devreg_device_tokens_refused_total", Help: "Device token requests refused, by reason (the OAuth error, or throttled).",
		}, []string{"reason"}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devreg_registrations_total", Help: "Registration requests (API and console bulk uploads) that succeeded, dry runs not counted.",
		}),
		devicesReg: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devreg_devices_registered_total", Help: "Devices registered by registration requests: created, or replaced (on_conflict=replace).",
		}, []string{"result"}),
		throttledLogins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devreg_throttled_logins_total", Help: "Logins refused by the failure throttle, by kind (device or console).",
		}, []string{"kind"}),
	}
	for r := range refusalReasons {
		m.tokensRefused.WithLabelValues(r)
	}
	m.devicesReg.WithLabelValues("created")
	m.devicesReg.WithLabelValues("replaced")
	m.throttledLogins.WithLabelValues(LoginDevice)
	m.throttledLogins.WithLabelValues(LoginConsole)
	reg.MustRegister(m.tokensIssued, m.tokensRefused, m.registrations, m.devicesReg, m.throttledLogins)
	if src.DB != nil {
		stat := func(f func(sql.DBStats) float64) func() float64 { return func() float64 { return f(src.DB.Stats()) } }
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "devreg_db_connections_in_use", Help: "Database connections in use now."},
				stat(func(s sql.DBStats) float64 { return float64(s.InUse) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "devreg_db_connections_idle", Help: "Database connections open and idle now."},
				stat(func(s sql.DBStats) float64 { return float64(s.Idle) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "devreg_db_connections_max", Help: "The most database connections the pool opens."},
				stat(func(s sql.DBStats) float64 { return float64(s.MaxOpenConnections) })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "devreg_db_waits_total", Help: "Times a request waited for a free database connection."},
				stat(func(s sql.DBStats) float64 { return float64(s.WaitCount) })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "devreg_db_wait_seconds_total", Help: "Time spent waiting for a free database connection."},
				stat(func(s sql.DBStats) float64 { return s.WaitDuration.Seconds() })),
		)
	}
	if src.LastSeenBacklog != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "devreg_last_seen_backlog", Help: "Broker logins and credential uses waiting to be written as last_seen_at (written every 5 s).",
		}, func() float64 { return float64(src.LastSeenBacklog()) }))
	}
	if src.AuditEntries != nil {
		reg.MustRegister(auditCollector{count: src.AuditEntries})
	}
	return m
}

// TokenIssued counts a device token issued.
func (m *Metrics) TokenIssued() {
	if m != nil {
		m.tokensIssued.Inc()
	}
}

// TokenRefused counts a device token request refused for reason (one of the Refused constants).
func (m *Metrics) TokenRefused(reason string) {
	if m == nil {
		return
	}
	if !refusalReasons[reason] {
		reason = RefusedServerError
	}
	m.tokensRefused.WithLabelValues(reason).Inc()
}

// Registered counts a registration request that succeeded, and the devices it created and replaced.
func (m *Metrics) Registered(created, replaced int64) {
	if m == nil {
		return
	}
	m.registrations.Inc()
	m.devicesReg.WithLabelValues("created").Add(float64(created))
	m.devicesReg.WithLabelValues("replaced").Add(float64(replaced))
}

// Throttled counts a login refused by the failure throttle; kind is LoginDevice or LoginConsole.
func (m *Metrics) Throttled(kind string) {
	if m != nil {
		m.throttledLogins.WithLabelValues(kind).Inc()
	}
}

// auditCollector reads the number of audit entries at each scrape, with a short timeout: a
// database that does not answer leaves the figure out of that scrape rather than holding it or
// failing the scrape (whose other figures matter most then).
type auditCollector struct {
	count func(ctx context.Context) (int64, error)
}

var auditDesc = prometheus.NewDesc("devreg_audit_entries_total",
	"Audit entries appended, in all accounts' chains together (read from the database: the same on every server of an installation).", nil, nil)

func (c auditCollector) Describe(ch chan<- *prometheus.Desc) { ch <- auditDesc }

func (c auditCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := c.count(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(auditDesc, prometheus.CounterValue, float64(n))
}
