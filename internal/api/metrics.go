package api

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are op-dbus's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	reg           *prometheus.Registry
	queryDuration *prometheus.HistogramVec
	applies       *prometheus.CounterVec
	applyDuration prometheus.Histogram
	drift         *prometheus.GaugeVec
	events        *prometheus.CounterVec
	auditEntries  prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg (a new
// registry when reg is nil).
func NewMetrics(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		reg: reg,
		queryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "op_dbus_query_duration_seconds",
			Help:    "Time to read the live state, by plugin (\"all\" for a whole-host query).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"plugin"}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "op_dbus_applies_total",
			Help: "Applies by result (success, failed, refused) and source (api, daemon, cli, mcp, dbus).",
		}, []string{"result", "source"}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "op_dbus_apply_duration_seconds",
			Help:    "Time an apply took, from request to verified result.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		drift: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "op_dbus_drift_items",
			Help: "Items out of line with the desired state, by plugin, at the last drift check.",
		}, []string{"plugin"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "op_dbus_events_total",
			Help: "Change events received, by source (e.g. a D-Bus signal's service).",
		}, []string{"source"}),
		auditEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "op_dbus_audit_entries",
			Help: "Entries in the audit log.",
		}),
	}
	reg.MustRegister(m.queryDuration, m.applies, m.applyDuration, m.drift, m.events, m.auditEntries)
	return m
}

// Registry is the registry the metrics are registered with.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// ObserveQuery records how long reading plugin's live state took.
func (m *Metrics) ObserveQuery(plugin string, d time.Duration) {
	if m == nil {
		return
	}
	m.queryDuration.WithLabelValues(plugin).Observe(d.Seconds())
}

// Applied counts an apply and, unless it was refused, its duration.
func (m *Metrics) Applied(result, source string, d time.Duration) {
	if m == nil {
		return
	}
	m.applies.WithLabelValues(result, source).Inc()
	if result != "refused" {
		m.applyDuration.Observe(d.Seconds())
	}
}

// SetDrift sets the number of items of plugin out of line.
func (m *Metrics) SetDrift(plugin string, n int) {
	if m == nil {
		return
	}
	m.drift.WithLabelValues(plugin).Set(float64(n))
}

// Event counts a change event from source.
func (m *Metrics) Event(source string) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(source).Inc()
}

// SetAuditEntries sets the audit log's size.
func (m *Metrics) SetAuditEntries(n uint64) {
	if m == nil {
		return
	}
	m.auditEntries.Set(float64(n))
}
