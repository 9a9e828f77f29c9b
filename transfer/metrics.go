package transfer

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the transfer engine moves. One Metrics is shared by a
// node's Server and its fetches; it is registered on a Registerer the
// daemon passes in, so several nodes fit in one test process. A nil
// *Metrics is valid and records nothing.
type Metrics struct {
	fetchedBytes  prometheus.Counter
	servedBytes   prometheus.Counter
	pieceFailures *prometheus.CounterVec
	refusals      *prometheus.CounterVec
	slotReclaims  *prometheus.CounterVec
	fetchDuration *prometheus.HistogramVec
}

// NewMetrics creates the transfer metrics and registers them on reg; a nil
// reg gives working but unregistered metrics.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		fetchedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Subsystem: "transfer", Name: "fetched_bytes_total",
			Help: "Piece bytes received from providers, including duplicates and bad pieces.",
		}),
		servedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Subsystem: "transfer", Name: "served_bytes_total",
			Help: "Bytes sent to fetching peers (piece data and layers).",
		}),
		pieceFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Subsystem: "transfer", Name: "peer_faults_total",
			Help: "Providers dropped during a fetch, by reason (bad_piece, bad_layer, stall, unavailable, connection).",
		}, []string{"reason"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Subsystem: "transfer", Name: "server_refusals_total",
			Help: "Requests the server answered with an error frame, by status.",
		}, []string{"status"}),
		slotReclaims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Subsystem: "transfer", Name: "server_slot_reclaims_total",
			Help: "Upload slots taken from a peer for a waiting one, by reason (stalled: it stopped reading and its requests were reset; tenure: it held the slot longest, past its tenure).",
		}, []string{"reason"}),
		fetchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "gentoo_p2pd", Subsystem: "transfer", Name: "fetch_duration_seconds",
			Help:    "Wall time of Fetch calls, by result (ok, error, canceled).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
		}, []string{"result"}),
	}
	// Export every fault reason from the start, so a dashboard sees a zero
	// rather than a missing series until the first bad peer.
	for _, r := range []FaultKind{FaultBadPiece, FaultBadLayer, FaultProtocol, FaultStall, FaultUnavailable, FaultConnection} {
		m.pieceFailures.WithLabelValues(string(r))
	}
	for _, r := range []string{"stalled", "tenure"} {
		m.slotReclaims.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.fetchedBytes, m.servedBytes, m.pieceFailures, m.refusals, m.slotReclaims, m.fetchDuration} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("transfer: metrics already registered on this registry: %w", err)
			}
			return nil, fmt.Errorf("transfer: registering metrics: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) addFetched(n int) {
	if m != nil {
		m.fetchedBytes.Add(float64(n))
	}
}

func (m *Metrics) addServed(n int) {
	if m != nil {
		m.servedBytes.Add(float64(n))
	}
}

func (m *Metrics) fault(reason string) {
	if m != nil {
		m.pieceFailures.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) refused(code byte) {
	if m != nil {
		m.refusals.WithLabelValues(statusName(code)).Inc()
	}
}

func (m *Metrics) fetchDone(result string, seconds float64) {
	if m != nil {
		m.fetchDuration.WithLabelValues(result).Observe(seconds)
	}
}

func (m *Metrics) reclaimed(reason string) {
	if m != nil {
		m.slotReclaims.WithLabelValues(reason).Inc()
	}
}
