package builder

import "github.com/prometheus/client_golang/prometheus"

// metrics are the builder's Prometheus metrics, registered on the
// daemon's Registerer (nil: kept, not exported).
type metrics struct {
	queued, running prometheus.Gauge
	done, failed    prometheus.Counter
	cpu             prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gentoo_p2pd", Subsystem: "builder", Name: "queued",
			Help: "Donated builds planned and not started.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gentoo_p2pd", Subsystem: "builder", Name: "running",
			Help: "Donated builds running.",
		}),
		done: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Subsystem: "builder", Name: "done_total",
			Help: "Donated builds that wrote a binpkg, indexed and announced.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Subsystem: "builder", Name: "failed_total",
			Help: "Donated builds that failed (the variant then waits before it is tried again).",
		}),
		cpu: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gentoo_p2pd", Subsystem: "builder", Name: "cpu_seconds_total",
			Help: "CPU time (user + system) the donated builds took.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.queued, m.running, m.done, m.failed, m.cpu)
	}
	return m
}
