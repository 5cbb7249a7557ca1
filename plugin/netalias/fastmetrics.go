package netalias

import (
	"context"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/metrics"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// The deployed chain (Corefile.example) puts prometheus and errors in front
// of netalias: gate → prometheus → errors → netalias → cache → forward.
// For the names netalias answers, what those two do per query is fixed:
// prometheus records the reply (rcode, size, the plugin that wrote it) and
// reports it with vars.Report; errors does nothing (netalias returns no
// error). Through the chain, that costs a recorder and two plugin writers
// (four allocations), three frames deep enough (1.5 KiB) to make every
// query's goroutine grow its stack, and a third of the chain's CPU time
// beyond a bare netalias block's (under dnsperf).
//
// metricsShortcut does the same from the gate, for the queries netalias
// answers: what prometheus's ServeDNS (CoreDNS v1.15
// plugin/metrics/handler.go) and vars.Report (vars/report.go) do, with the
// same label values in the same series, so every metric a Prometheus user
// sees is the same (tests compare them, series by series, with the real
// chain's). Queries netalias does not answer (it would call the next
// plugin) go through the real chain, from prometheus on. It is a copy of
// CoreDNS's code, not a use of it: a CoreDNS upgrade that changes those
// two files must change this too (the tests fail when the series differ).
type metricsShortcut struct {
	m *metrics.Metrics
	// label is the "plugin" label of coredns_dns_responses_total: the
	// writer prometheus hands down learns the name of the plugin right
	// after it (its next), whichever plugin further down writes.
	label  string
	series seriesCache
}

var (
	// shortcutsMade counts the chains given a shortcut (at start-up):
	// tests check that the chain they compare had one.
	shortcutsMade atomic.Int64
	// shortcutOff sends every query through the real chain: tests answer
	// the same query both ways and compare.
	shortcutOff atomic.Bool
)

// shortcutFor returns the shortcut for the chain next (the gate's), or nil
// unless the chain is prometheus, optionally errors, then h: any other
// plugin in front of netalias (log, acl, rewrite...) keeps the real chain.
func shortcutFor(h *Netalias, next plugin.Handler) *metricsShortcut {
	m, ok := next.(*metrics.Metrics)
	if !ok || m.Next == nil {
		return nil
	}
	if m.Next != plugin.Handler(h) && (m.Next.Name() != "errors" || nextOf(m.Next) != plugin.Handler(h)) {
		return nil
	}
	shortcutsMade.Add(1)
	return &metricsShortcut{m: m, label: m.Next.Name()}
}

// nextOf reads the exported Next field of a plugin's handler (errors'
// handler type is unexported), or nil.
func nextOf(p plugin.Handler) plugin.Handler {
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("Next")
	if !f.IsValid() || !f.CanInterface() {
		return nil
	}
	n, _ := f.Interface().(plugin.Handler)
	return n
}

// serve answers r as prometheus → errors → netalias would, or reports
// false (nothing written, nothing counted) when netalias would hand r to
// the next plugin: the caller then runs the real chain. Its frame is kept
// small, the work before and after being in start and report: the write
// below it is the query's deepest stack, and a bare netalias block's fits
// the goroutine's starting stack with little to spare (growing it costs
// more than prometheus's own work).
func (s *metricsShortcut) serve(ctx context.Context, h *Netalias, w dns.ResponseWriter, r *dns.Msg) (int, bool, error) {
	rw := s.start(w, r)
	status, err := h.ServeDNS(ctx, rw, r)
	if rw.declined {
		return 0, false, nil
	}
	s.report(ctx, r, rw, status)
	return status, true, err
}

// start is the beginning of prometheus's ServeDNS: the request's size
// before any plugin changes it, the zone among prometheus's zones, the
// start time.
//
//go:noinline
func (s *metricsShortcut) start(w dns.ResponseWriter, r *dns.Msg) *shortcutWriter {
	state := request.Request{W: w, Req: r}
	rw := &shortcutWriter{ResponseWriter: w, label: s.label, reqSize: r.Len()}
	rw.zone = plugin.Zones(s.m.ZoneNames()).Matches(state.QName())
	if rw.zone == "" {
		rw.zone = "."
	}
	rw.start = time.Now()
	return rw
}

// report is the end of prometheus's ServeDNS: vars.Report's counting,
// with its series from the cache (see seriesCache). Its request.Request is
// made after the write where prometheus's was made before: the same, since
// prometheus's computes nothing it keeps (Do, Size, Family) before Report.
//
//go:noinline
func (s *metricsShortcut) report(ctx context.Context, r *dns.Msg, rw *shortcutWriter, status int) {
	state := request.Request{W: rw.ResponseWriter, Req: r}
	rc := rw.rcode
	if !plugin.ClientWrite(status) {
		rc = status
	}
	k := seriesKey{
		server: metrics.WithServer(ctx), zone: rw.zone, view: metrics.WithView(ctx), proto: state.Proto(),
		plugin: rw.plugin, rcode: rc, qtype: state.QType(), v6: state.Family() == 2, do: state.Do(),
	}
	reqSize := rw.reqSize
	if reqSize <= 0 { // as Report: the original size, or the request's now
		reqSize = state.Len()
	}
	s.series.get(k).count(rw.start, rw.size, reqSize)
}

// shortcutWriter records what prometheus's recorder (dnstest.Recorder)
// records: the last rcode, the sizes of the messages as handed over
// (before the server's scrub adds OPT or truncates), and the plugin label.
// A netalias that would call the next plugin marks it declined instead.
type shortcutWriter struct {
	dns.ResponseWriter
	label    string
	plugin   string
	rcode    int
	size     int
	declined bool
	// What prometheus keeps on its stack, kept here to keep serve's
	// frame small.
	zone    string
	reqSize int
	start   time.Time
}

func (w *shortcutWriter) WriteMsg(m *dns.Msg) error {
	w.plugin = w.label
	w.rcode = m.Rcode
	w.size += m.Len()
	return w.ResponseWriter.WriteMsg(m)
}

func (w *shortcutWriter) Write(buf []byte) (int, error) {
	w.plugin = w.label
	n, err := w.ResponseWriter.Write(buf)
	if err == nil {
		w.size += n
	}
	return n, err
}

// declined reports whether w is the shortcut's writer, marking it: the
// query leaves the shortcut for the real chain.
func declined(w dns.ResponseWriter) bool {
	if sw, ok := w.(*shortcutWriter); ok {
		sw.declined = true
		return true
	}
	return false
}
