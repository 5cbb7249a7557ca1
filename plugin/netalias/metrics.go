package netalias

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	networksGauge = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "netalias", Name: "networks",
		Help: "Networks known to netalias.",
	})
	endpointsGauge = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "netalias", Name: "endpoints",
		Help: "Endpoints (container attachments) served.",
	})
	recordsGauge = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "netalias", Name: "records",
		Help: "Address and PTR records served.",
	})
	updatesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "netalias", Name: "updates_applied_total",
		Help: "Changes applied to the served records, by source.",
	}, []string{"source"})
	answersTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "netalias", Name: "answers_total",
		Help: "Queries handled, by result (success, nodata, nxdomain, refused, next).",
	}, []string{"server", "result"})
	healthExcluded = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: "netalias", Name: "health_excluded_total",
		Help: "Addresses left out of answers because their endpoint was starting or unhealthy, per server.",
	}, []string{"server"})
	unreadyGauge = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "netalias", Name: "unready_endpoints",
		Help: "Endpoints whose runtime healthcheck is starting or failing.",
	})
	staleGauge = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: "netalias", Name: "stale",
		Help: "1 when a source's records may be out of date (its origin is unreachable).",
	}, []string{"source"})
)

// answerCounters caches the per-server counters: a labelled lookup per
// query would cost a hash and an allocation on the hot path.
// The last server's counters are checked first: one process usually has one
// server (one address) for netalias, and comparing its address costs less
// than hashing it.
type answerCounters struct {
	last atomic.Pointer[serverCounters]
	m    sync.Map // server → *serverCounters
}

type serverCounters struct {
	server                                   string
	success, nodata, nxdomain, refused, next prometheus.Counter
	excluded                                 prometheus.Counter // health
}

func (a *answerCounters) get(ctx context.Context) *serverCounters {
	server := metrics.WithServer(ctx)
	if c := a.last.Load(); c != nil && c.server == server {
		return c
	}
	if c, ok := a.m.Load(server); ok {
		a.last.Store(c.(*serverCounters))
		return c.(*serverCounters)
	}
	c := &serverCounters{
		server:   server,
		success:  answersTotal.WithLabelValues(server, "success"),
		nodata:   answersTotal.WithLabelValues(server, "nodata"),
		nxdomain: answersTotal.WithLabelValues(server, "nxdomain"),
		refused:  answersTotal.WithLabelValues(server, "refused"),
		next:     answersTotal.WithLabelValues(server, "next"),
		excluded: healthExcluded.WithLabelValues(server),
	}
	got, _ := a.m.LoadOrStore(server, c)
	a.last.Store(got.(*serverCounters))
	return got.(*serverCounters)
}
