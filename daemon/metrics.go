package daemon

import "github.com/prometheus/client_golang/prometheus"

// metrics are the daemon's own Prometheus series; p2p and transfer register
// theirs on the same registry.
type metrics struct {
	announces    prometheus.Counter
	lookups      prometheus.Counter
	attestations prometheus.Counter
	attestServed prometheus.Counter
	rejected     *prometheus.CounterVec
	verdicts     *prometheus.CounterVec
	fetchFailed  prometheus.Counter
	evicted      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		announces: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "announces_total",
			Help: "Local builds announced (build key and variant key provided).",
		}),
		lookups: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "lookups_total",
			Help: "DHT provider lookups started by this daemon.",
		}),
		attestations: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "attestations_received_total",
			Help: "New valid attestations stored from peers.",
		}),
		attestServed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "attest_requests_served_total",
			Help: "Attestation requests answered.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "rejected_total",
			Help: "Input from peers that failed verification, by kind.",
		}, []string{"kind"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "verdicts_total",
			Help: "Trust verdicts computed, by decision.",
		}, []string{"decision"}),
		fetchFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "gateway_fetch_failures_total",
			Help: "Builds portage asked the gateway for that could not be fetched from peers.",
		}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Name: "attestations_evicted_total",
			Help: "Attestations evicted because their attester's storage budget was full.",
		}),
	}
	reg.MustRegister(m.announces, m.lookups, m.attestations, m.attestServed, m.rejected, m.verdicts, m.fetchFailed, m.evicted)
	return m
}

// counterValue reads a counter's total from the registry (status shows
// the same figures /metrics does).
func (d *Daemon) counterValue(name string) float64 {
	mfs, err := d.reg.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
