package p2p

import (
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are registered on the Registerer passed in Config, never on the
// global default, so several nodes fit in one process (tests, benchmarks).
// With a nil Registerer the collectors still exist but go nowhere.
type metrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector

	lookups         *prometheus.CounterVec
	lookupSeconds   prometheus.Histogram
	provides        prometheus.Counter
	withdrawals     prometheus.Counter
	served          *prometheus.CounterVec
	gossipReceived  prometheus.Counter
	gossipRejected  prometheus.Counter
	gossipIgnored   prometheus.Counter
	gossipDelivered prometheus.Counter
	gossipPublished prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, n *Node) (*metrics, error) {
	const ns = "gentoo_p2pd"
	m := &metrics{
		reg: reg,
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "dht_lookups_total",
			Help: "FindProviders calls by result (found, not_found).",
		}, []string{"result"}),
		lookupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "dht_lookup_seconds",
			Help:    "Duration of FindProviders calls.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		provides: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "dht_keys_provided_total",
			Help: "Keys registered for providing.",
		}),
		withdrawals: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "dht_keys_withdrawn_total",
			Help: "Keys withdrawn from providing.",
		}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "stream_requests_served_total",
			Help: "Attest and catalog requests served, by protocol and result (ok, refused, error).",
		}, []string{"protocol", "result"}),
		gossipReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "gossip_received_total",
			Help: "Gossip messages from other peers submitted to validation.",
		}),
		gossipRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "gossip_rejected_total",
			Help: "Gossip messages rejected as invalid.",
		}),
		gossipIgnored: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "gossip_ignored_total",
			Help: "Gossip messages dropped without penalty (ErrGossipIgnore).",
		}),
		gossipDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "gossip_delivered_total",
			Help: "Gossip messages accepted and delivered.",
		}),
		gossipPublished: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "gossip_published_total",
			Help: "Gossip messages published by this node.",
		}),
	}
	peers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Name: "peers",
		Help: "Currently connected gentoo-p2pd peers (public DHT nodes of the rendezvous not counted).",
	}, func() float64 {
		if n.liveHost.Load() == nil {
			return 0
		}
		return float64(n.peerCount())
	})
	m.collectors = []prometheus.Collector{m.lookups, m.lookupSeconds, m.provides, m.withdrawals, m.served,
		m.gossipReceived, m.gossipRejected, m.gossipIgnored, m.gossipDelivered, m.gossipPublished, peers}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			return nil, err
		}
	}
	return m, nil
}

// unregister removes the collectors so a new node can reuse the registry.
func (m *metrics) unregister() {
	if m == nil || m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}

func (m *metrics) observeLookup(d time.Duration, found int) {
	result := "found"
	if found == 0 {
		result = "not_found"
	}
	m.lookups.WithLabelValues(result).Inc()
	m.lookupSeconds.Observe(d.Seconds())
}

func (m *metrics) servedRequest(proto protocol.ID, result string) {
	m.served.WithLabelValues(string(proto), result).Inc()
}
