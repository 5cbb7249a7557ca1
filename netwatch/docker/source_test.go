package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"

	"github.com/netalias/netalias/netwatch"
)

// fakeEngine serves the few Engine API calls the source makes, on a unix
// socket, from state the test sets, with an event stream the test feeds
// and can break. It speaks like Podman's compat service where the two
// differ when podman is set.
type fakeEngine struct {
	t        *testing.T
	sock     string
	mu       sync.Mutex
	ctrs     map[string]string // id → inspect JSON
	nets     map[string]string // id → {"Name","Driver","IPAM"} JSON
	listAs   map[string]string // id → name in the listing, when it differs (Podman)
	streams  map[chan events.Message]bool
	srv      *http.Server
	inspects int
}

func newFakeEngine(t *testing.T) *fakeEngine {
	f := &fakeEngine{t: t, sock: filepath.Join(t.TempDir(), "engine.sock"),
		ctrs: map[string]string{}, nets: map[string]string{}, listAs: map[string]string{}, streams: map[chan events.Message]bool{}}
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeEngine) start() {
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		f.t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		w.Write([]byte("OK"))
	})
	mux.HandleFunc("/v1.41/containers/json", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		var list []map[string]string
		for id := range f.ctrs {
			list = append(list, map[string]string{"Id": id})
		}
		f.mu.Unlock()
		json.NewEncoder(w).Encode(list)
	})
	mux.HandleFunc("/v1.41/containers/{id}/json", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.inspects++
		var body string
		for id, js := range f.ctrs {
			if strings.HasPrefix(id, r.PathValue("id")) {
				body = js
			}
		}
		f.mu.Unlock()
		if body == "" {
			http.Error(w, `{"message":"no such container"}`, http.StatusNotFound)
			return
		}
		w.Write([]byte(body))
	})
	mux.HandleFunc("/v1.41/networks", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		var list []json.RawMessage
		for id, js := range f.nets {
			if as, ok := f.listAs[id]; ok {
				var n map[string]any
				json.Unmarshal([]byte(js), &n)
				n["Name"] = as
				b, _ := json.Marshal(n)
				js = string(b)
			}
			list = append(list, json.RawMessage(strings.Replace(js, "{", `{"Id":"`+id+`",`, 1)))
		}
		f.mu.Unlock()
		json.NewEncoder(w).Encode(list)
	})
	mux.HandleFunc("/v1.41/networks/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for id, js := range f.nets {
			var n struct{ Name string }
			json.Unmarshal([]byte(js), &n)
			if id == r.PathValue("id") || n.Name == r.PathValue("id") {
				w.Write([]byte(js))
				return
			}
		}
		http.Error(w, `{"message":"no such network"}`, http.StatusNotFound)
	})
	mux.HandleFunc("/v1.41/events", func(w http.ResponseWriter, r *http.Request) {
		ch := make(chan events.Message, 1000)
		f.mu.Lock()
		f.streams[ch] = true
		f.mu.Unlock()
		defer func() { f.mu.Lock(); delete(f.streams, ch); f.mu.Unlock() }()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		enc := json.NewEncoder(w)
		for {
			select {
			case m, ok := <-ch:
				if !ok {
					return
				}
				enc.Encode(m)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	})
	f.srv = &http.Server{Handler: mux}
	go f.srv.Serve(ln)
}

// stop closes the socket and every connection: the engine is gone.
func (f *fakeEngine) stop() {
	f.srv.Close()
	f.mu.Lock()
	for ch := range f.streams {
		close(ch)
		delete(f.streams, ch)
	}
	f.mu.Unlock()
}

func (f *fakeEngine) emit(m events.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.streams {
		ch <- m
	}
}

func (f *fakeEngine) streaming() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.streams) > 0
}

// setCtr sets (js != "") or removes a container.
func (f *fakeEngine) setCtr(id, js string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if js == "" {
		delete(f.ctrs, id)
	} else {
		f.ctrs[id] = js
	}
}

func ctrJSON(id, name, network, ip string, extra string) string {
	return fmt.Sprintf(`{"Id":%q,"Name":"/%s","State":{"Running":true},"Config":{"Labels":{}},"HostConfig":{},
	 "NetworkSettings":{"Networks":{%q:{"IPAddress":%q,"Gateway":"10.9.0.1"%s}}}}`, id, name, network, ip, extra)
}

// memSink records what the source publishes, in order.
type memSink struct {
	mu    sync.Mutex
	nets  map[string]*netwatch.Network
	stale bool
	log   []string
}

func (m *memSink) Replace(_ string, ns []*netwatch.Network) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nets = map[string]*netwatch.Network{}
	for _, n := range ns {
		m.nets[n.Name] = n
	}
	m.log = append(m.log, "replace")
}
func (m *memSink) Update(_ string, n *netwatch.Network) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nets[n.Name] = n
	m.log = append(m.log, "update "+n.Name)
}
func (m *memSink) Remove(_ string, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.nets, name)
	m.log = append(m.log, "remove "+name)
}
func (m *memSink) SetStale(_ string, s bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stale = s
}

// names is "NAME=IP" for every endpoint of network, sorted by the model.
func (m *memSink) names(network string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nets[network]
	if n == nil {
		return "<none>"
	}
	var out []string
	for _, e := range n.Endpoints {
		out = append(out, e.Name+"="+e.IPv4.String())
	}
	return strings.Join(out, ",")
}

func (m *memSink) isStale() bool { m.mu.Lock(); defer m.mu.Unlock(); return m.stale }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runSource(t *testing.T, f *fakeEngine) (*Source, *memSink) {
	s, err := New("unix://" + f.sock)
	if err != nil {
		t.Fatal(err)
	}
	s.Log = netwatch.Printf(t.Logf)
	sink := &memSink{nets: map[string]*netwatch.Network{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx, sink) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "first sync", s.Synced)
	waitFor(t, "event stream open", f.streaming)
	return s, sink
}

const testnet = `{"Name":"testnet","Driver":"bridge","IPAM":{"Config":[{"Subnet":"10.9.0.0/24","Gateway":"10.9.0.1"}]}}`

// Events apply in the order sent: a burst of changes to one container
// ends in the engine's final state, whatever the timing.
func TestSourceEventOrder(t *testing.T) {
	f := newFakeEngine(t)
	f.nets["n1"] = testnet
	_, sink := runSource(t, f)
	if got := sink.names("testnet"); got != "" {
		t.Fatalf("empty network published as %q", got)
	}
	id := strings.Repeat("ab", 32)
	for i := 1; i <= 50; i++ {
		f.setCtr(id, ctrJSON(id, "c1", "testnet", fmt.Sprintf("10.9.0.%d", i), ""))
		f.emit(events.Message{Type: events.ContainerEventType, Action: events.ActionStart, Actor: events.Actor{ID: id}})
	}
	waitFor(t, "last address", func() bool { return sink.names("testnet") == "c1=10.9.0.50" })
	// Replayed events for an unchanged container publish nothing.
	sink.mu.Lock()
	n := len(sink.log)
	sink.mu.Unlock()
	f.emit(events.Message{Type: events.ContainerEventType, Action: events.ActionStart, Actor: events.Actor{ID: id}})
	f.setCtr(id, "")
	f.emit(events.Message{Type: events.ContainerEventType, Action: events.ActionDestroy, Actor: events.Actor{ID: id}})
	waitFor(t, "removed", func() bool { return sink.names("testnet") == "" })
	sink.mu.Lock()
	tail := sink.log[n:]
	sink.mu.Unlock()
	if len(tail) != 1 || tail[0] != "update testnet" {
		t.Errorf("after a redundant event and a removal, published %v; want one update", tail)
	}
}

// Podman: connect events name the container as the actor (short id), and
// the default network is listed as "bridge" but inspected as "podman".
func TestSourcePodmanShapes(t *testing.T) {
	f := newFakeEngine(t)
	f.nets["2f259bab93aa"] = `{"Name":"podman","Driver":"bridge","IPAM":{"Config":[{"Subnet":"10.88.0.0/16","Gateway":"10.88.0.1"}]}}`
	f.listAs["2f259bab93aa"] = "bridge"
	_, sink := runSource(t, f)
	if sink.names("podman") != "" || sink.names("bridge") != "<none>" {
		t.Fatalf("default network published as bridge %q, podman %q; want podman only", sink.names("bridge"), sink.names("podman"))
	}
	id := strings.Repeat("cd", 32)
	f.setCtr(id, ctrJSON(id, "p1", "podman", "10.88.0.5", `,"Aliases":["`+id[:12]+`"]`))
	f.emit(events.Message{Type: events.NetworkEventType, Action: events.ActionConnect, Actor: events.Actor{ID: id[:12], Attributes: map[string]string{"name": "p1"}}})
	waitFor(t, "p1 on podman", func() bool { return sink.names("podman") == "p1=10.88.0.5" })
	// Podman says "remove", and the actor may be a short id.
	f.setCtr(id, "")
	f.emit(events.Message{Type: events.ContainerEventType, Action: events.ActionRemove, Actor: events.Actor{ID: id[:12]}})
	waitFor(t, "p1 removed", func() bool { return sink.names("podman") == "" })
}

// The engine goes away: records stay and are stale; a container removed
// meanwhile goes with the resync; a network that vanished goes too.
func TestSourceReconnect(t *testing.T) {
	f := newFakeEngine(t)
	f.nets["n1"] = testnet
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	f.setCtr(a, ctrJSON(a, "keep", "testnet", "10.9.0.2", ""))
	f.setCtr(b, ctrJSON(b, "gone", "testnet", "10.9.0.3", ""))
	_, sink := runSource(t, f)
	if got := sink.names("testnet"); got != "gone=10.9.0.3,keep=10.9.0.2" {
		t.Fatalf("initial listing: %q", got)
	}
	f.stop()
	waitFor(t, "stale", sink.isStale)
	if got := sink.names("testnet"); got != "gone=10.9.0.3,keep=10.9.0.2" {
		t.Errorf("while down: %q, want the last known records", got)
	}
	f.setCtr(b, "")
	f.start()
	waitFor(t, "fresh again", func() bool { return !sink.isStale() })
	if got := sink.names("testnet"); got != "keep=10.9.0.2" {
		t.Errorf("after resync: %q", got)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if n := netip.MustParsePrefix("10.9.0.0/24"); sink.nets["testnet"].Subnet != n {
		t.Errorf("subnet %v", sink.nets["testnet"].Subnet)
	}
}

// Podman announces no network creation or removal: the periodic listing
// finds both.
func TestSourceNetworksWithoutEvents(t *testing.T) {
	old := watchdogInterval
	watchdogInterval = 20 * time.Millisecond
	t.Cleanup(func() { watchdogInterval = old })
	f := newFakeEngine(t)
	_, sink := runSource(t, f)
	f.mu.Lock()
	f.nets["n1"] = testnet
	f.mu.Unlock()
	waitFor(t, "new network published", func() bool { return sink.names("testnet") == "" })
	f.mu.Lock()
	delete(f.nets, "n1")
	f.mu.Unlock()
	waitFor(t, "removed network dropped", func() bool { return sink.names("testnet") == "<none>" })
}

// A ping that fails while the stream stays open (a frozen daemon) counts
// as an outage too.
func TestSourceFrozenEngine(t *testing.T) {
	old := watchdogInterval
	watchdogInterval = 20 * time.Millisecond
	t.Cleanup(func() { watchdogInterval = old })
	oldTimeout := requestTimeout
	requestTimeout = 200 * time.Millisecond
	t.Cleanup(func() { requestTimeout = oldTimeout })
	f := newFakeEngine(t)
	_, sink := runSource(t, f)
	f.mu.Lock() // every request but the open stream now hangs
	waitFor(t, "stale while frozen", sink.isStale)
	f.mu.Unlock()
	waitFor(t, "fresh after thaw", func() bool { return !sink.isStale() })
}

// BenchmarkResync: a complete listing of 500 containers on 5 networks (a
// fake engine on a unix socket, so this is the source's own cost plus the
// API round trips), as after a start or a reconnect.
func BenchmarkResync(b *testing.B) {
	t := &testing.T{}
	f := &fakeEngine{t: t, sock: filepath.Join(b.TempDir(), "engine.sock"),
		ctrs: map[string]string{}, nets: map[string]string{}, listAs: map[string]string{}, streams: map[chan events.Message]bool{}}
	f.start()
	defer f.stop()
	for i := 0; i < 5; i++ {
		f.nets[fmt.Sprintf("n%d", i)] = fmt.Sprintf(`{"Name":"net%d","Driver":"bridge","IPAM":{"Config":[{"Subnet":"10.9.%d.0/24"}]}}`, i, i)
	}
	for i := 0; i < 500; i++ {
		id := fmt.Sprintf("%064x", i+1)
		f.ctrs[id] = ctrJSON(id, fmt.Sprintf("c%d", i), fmt.Sprintf("net%d", i%5), fmt.Sprintf("10.9.%d.%d", i%5, i/5+2), "")
	}
	s, err := New("unix://" + f.sock)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m, err := s.resync(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if n := m.all(); len(n) != 5 || len(n[0].Endpoints) != 100 {
			b.Fatalf("resync: %d networks", len(n))
		}
	}
}

// Removals (destroy/remove, a Docker disconnect naming its network) apply
// without asking the engine, which is slowest when busiest.
func TestSourceRemovalsNeedNoInspect(t *testing.T) {
	f := newFakeEngine(t)
	f.nets["n1"] = testnet
	f.nets["n2"] = `{"Name":"other","Driver":"bridge","IPAM":{"Config":[{"Subnet":"10.8.0.0/24"}]}}`
	a := strings.Repeat("e", 64)
	f.setCtr(a, fmt.Sprintf(`{"Id":%q,"Name":"/two","State":{"Running":true},"Config":{},"HostConfig":{},
	 "NetworkSettings":{"Networks":{"testnet":{"IPAddress":"10.9.0.7"},"other":{"IPAddress":"10.8.0.7"}}}}`, a))
	_, sink := runSource(t, f)
	f.mu.Lock()
	before := f.inspects
	f.mu.Unlock()
	// The engine still shows it everywhere: only the event can tell.
	f.emit(events.Message{Type: events.NetworkEventType, Action: events.ActionDisconnect,
		Actor: events.Actor{ID: "n2", Attributes: map[string]string{"container": a, "name": "other", "type": "bridge"}}})
	waitFor(t, "gone from other", func() bool { return sink.names("other") == "" })
	if got := sink.names("testnet"); got != "two=10.9.0.7" {
		t.Errorf("disconnect from other touched testnet: %q", got)
	}
	f.emit(events.Message{Type: events.ContainerEventType, Action: events.ActionDestroy, Actor: events.Actor{ID: a}})
	waitFor(t, "gone after destroy", func() bool { return sink.names("testnet") == "" })
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inspects != before {
		t.Errorf("%d inspects for removals, want none", f.inspects-before)
	}
}

// History older than the session's window is ignored: Podman replays
// more than asked for, and the listing already reflects it.
func TestSourceIgnoresOldHistory(t *testing.T) {
	f := newFakeEngine(t)
	f.nets["n1"] = testnet
	a := strings.Repeat("f", 64)
	f.setCtr(a, ctrJSON(a, "alive", "testnet", "10.9.0.4", ""))
	_, sink := runSource(t, f)
	old := time.Now().Add(-time.Minute).UnixNano()
	f.emit(events.Message{Type: events.ContainerEventType, Action: events.ActionDestroy, Actor: events.Actor{ID: a}, TimeNano: old})
	f.emit(events.Message{Type: events.ContainerEventType, Action: events.ActionRename, Actor: events.Actor{ID: "marker"}, TimeNano: time.Now().UnixNano()})
	waitFor(t, "marker inspected", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.inspects >= 2 })
	if got := sink.names("testnet"); got != "alive=10.9.0.4" {
		t.Errorf("an old replayed destroy applied: %q", got)
	}
}

// health is the health published for name on network ("" when absent).
func (m *memSink) health(network, name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nets[network]; n != nil {
		for _, e := range n.Endpoints {
			if e.Name == name {
				return e.Health.String()
			}
		}
	}
	return ""
}

// Docker's health_status events ("health_status: healthy") apply without
// an inspect; the resync takes the status from inspect; a replayed event
// older than the last inspect changes nothing.
func TestSourceHealthEvents(t *testing.T) {
	f := newFakeEngine(t)
	f.nets["n1"] = testnet
	a := strings.Repeat("a1", 32)
	f.setCtr(a, fmt.Sprintf(`{"Id":%q,"Name":"/web1","State":{"Running":true,"Health":{"Status":"starting"}},"Config":{},"HostConfig":{},
	 "NetworkSettings":{"Networks":{"testnet":{"IPAddress":"10.9.0.2"}}}}`, a))
	beforeSync := time.Now()
	_, sink := runSource(t, f)
	if got := sink.health("testnet", "web1"); got != "starting" {
		t.Fatalf("after resync: %q, want starting (from inspect)", got)
	}
	f.mu.Lock()
	before := f.inspects
	f.mu.Unlock()
	for _, st := range []string{"healthy", "unhealthy", "healthy"} {
		f.emit(events.Message{Type: events.ContainerEventType, Action: events.Action("health_status: " + st),
			Actor: events.Actor{ID: a, Attributes: map[string]string{"name": "web1"}}, TimeNano: time.Now().UnixNano()})
		waitFor(t, "health "+st, func() bool { return sink.health("testnet", "web1") == st })
	}
	f.mu.Lock()
	if f.inspects != before {
		t.Errorf("%d inspects for Docker health events, want none", f.inspects-before)
	}
	f.mu.Unlock()
	// An event from before the resync's inspect (the session's replayed
	// history) is older than what the source knows.
	f.emit(events.Message{Type: events.ContainerEventType, Action: "health_status: unhealthy",
		Actor: events.Actor{ID: a}, TimeNano: beforeSync.UnixNano()})
	f.emit(events.Message{Type: events.ContainerEventType, Action: events.ActionRename, Actor: events.Actor{ID: "marker"}, TimeNano: time.Now().UnixNano()})
	waitFor(t, "marker inspected", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.inspects > before })
	if got := sink.health("testnet", "web1"); got != "healthy" {
		t.Errorf("a replayed older health event applied: %q", got)
	}
}

// healthInspect is the inspect of running container id, named name, at ip
// on testnet, with health status st.
func healthInspect(id, name, ip, st string) string {
	return fmt.Sprintf(`{"Id":%q,"Name":"/%s","State":{"Running":true,"Health":{"Status":%q,"FailingStreak":0,"Log":null}},"Config":{},"HostConfig":{},
	 "NetworkSettings":{"Networks":{"testnet":{"IPAddress":%q}}}}`, id, name, st, ip)
}

// Podman 4.3's compat stream says only "health_status" (and the status it
// carries elsewhere is the previous one): the source re-inspects.
func TestSourcePodmanHealthEvent(t *testing.T) {
	f := newFakeEngine(t)
	f.nets["n1"] = testnet
	a := strings.Repeat("b2", 32)
	js := func(st string) string { return healthInspect(a, "p1", "10.9.0.3", st) }
	f.setCtr(a, js("starting"))
	_, sink := runSource(t, f)
	f.setCtr(a, js("healthy"))
	f.emit(events.Message{Type: events.ContainerEventType, Action: events.ActionHealthStatus, Actor: events.Actor{ID: a}, TimeNano: time.Now().UnixNano()})
	waitFor(t, "healthy after re-inspect", func() bool { return sink.health("testnet", "p1") == "healthy" })
}

// Podman 4.3 logs a health_status event before it records the check's
// result: an inspect made at once reads the old status. The source
// inspects again a little later, with no further event.
func TestSourcePodmanHealthEventBeforeResult(t *testing.T) {
	f := newFakeEngine(t)
	f.nets["n1"] = testnet
	a := strings.Repeat("c3", 32)
	js := func(st string) string { return healthInspect(a, "p2", "10.9.0.4", st) }
	f.setCtr(a, js("healthy"))
	_, sink := runSource(t, f)
	waitFor(t, "healthy at first", func() bool { return sink.health("testnet", "p2") == "healthy" })
	f.emit(events.Message{Type: events.ContainerEventType, Action: events.ActionHealthStatus, Actor: events.Actor{ID: a}, TimeNano: time.Now().UnixNano()})
	time.Sleep(50 * time.Millisecond) // the event's inspect has read "healthy"
	f.setCtr(a, js("unhealthy"))      // the result recorded after the event
	waitFor(t, "unhealthy without another event", func() bool { return sink.health("testnet", "p2") == "unhealthy" })
}
