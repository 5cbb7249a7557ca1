package netwatch

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netalias/netalias/state"
	"github.com/netalias/netalias/state/syncack"
)

const testID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func netFile(name, ip string) *state.File {
	return &state.File{
		Network:   state.Network{ID: testID, Name: name, Subnet: netip.MustParsePrefix("10.202.5.0/24"), Gateway: netip.MustParseAddr("10.202.5.1")},
		Endpoints: []state.Endpoint{{ID: testID, Name: "c1", IPv4: netip.MustParseAddr(ip), Container: "c1"}},
	}
}

type logs struct {
	mu  sync.Mutex
	msg []string
}

func (l *logs) Infof(f string, a ...any)    { l.logf("[INFO] "+f, a...) }
func (l *logs) Warningf(f string, a ...any) { l.logf("[WARNING] "+f, a...) }
func (l *logs) Errorf(f string, a ...any)   { l.logf("[ERROR] "+f, a...) }

func (l *logs) logf(f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msg = append(l.msg, fmt.Sprintf(f, a...))
}

func (l *logs) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msg {
		if strings.Contains(m, sub) {
			n++
		}
	}
	return n
}

func startStateDir(t *testing.T, dir string) (*Store, *logs) {
	t.Helper()
	st := NewStore("state")
	src := NewStateDir(dir)
	lg := &logs{}
	src.Log = lg
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { src.Run(ctx, st); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "first load", st.Ready)
	return st, lg
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func addrOf(st *Store, network, name string) string {
	n := st.Snapshot().Network(network)
	if n == nil {
		return "<no network>"
	}
	rs := n.Lookup(name)
	if rs == nil || len(rs.V4) == 0 {
		return "<no name>"
	}
	return rs.V4[0].String()
}

func TestStateDirFollowsFiles(t *testing.T) {
	dir := t.TempDir()
	if err := state.Write(dir, netFile("n1", "10.202.5.2")); err != nil {
		t.Fatal(err)
	}
	st, lg := startStateDir(t, dir)
	if got := addrOf(st, "n1", "c1"); got != "10.202.5.2" {
		t.Fatalf("initial load: %s", got)
	}
	// A new file, a changed file.
	state.Write(dir, netFile("n2", "10.202.5.3"))
	eventually(t, "n2 appears", func() bool { return addrOf(st, "n2", "c1") == "10.202.5.3" })
	state.Write(dir, netFile("n1", "10.202.5.4"))
	eventually(t, "n1 changes", func() bool { return addrOf(st, "n1", "c1") == "10.202.5.4" })

	// A corrupt file keeps the last good records and is logged once.
	p := state.NetworkPath(dir, "n1")
	for i := 0; i < 3; i++ {
		if err := os.WriteFile(p, []byte("{not json"), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	eventually(t, "corruption logged", func() bool { return lg.count(p) >= 1 })
	if n := lg.count(p); n != 1 {
		t.Errorf("corrupt file logged %d times, want once", n)
	}
	if got := addrOf(st, "n1", "c1"); got != "10.202.5.4" {
		t.Fatalf("corrupt file: records became %s, want the last good 10.202.5.4", got)
	}
	// Fixed again.
	state.Write(dir, netFile("n1", "10.202.5.5"))
	eventually(t, "n1 fixed", func() bool { return addrOf(st, "n1", "c1") == "10.202.5.5" })

	// Temp files and other names are ignored; deletion removes the network.
	os.WriteFile(filepath.Join(state.NetworksPath(dir), ".n3.json.tmp-1"), []byte("junk"), 0o644)
	os.Remove(state.NetworkPath(dir, "n2"))
	eventually(t, "n2 removed", func() bool { return st.Snapshot().Network("n2") == nil })
	if lg.count(".n3.json") != 0 {
		t.Error("temp file was parsed")
	}
}

func TestStateDirCreatedWhenMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	st, _ := startStateDir(t, dir)
	if _, err := os.Stat(state.NetworksPath(dir)); err != nil {
		t.Fatalf("networks directory not created: %v", err)
	}
	state.Write(dir, netFile("n1", "10.202.5.2"))
	eventually(t, "n1 appears", func() bool { return addrOf(st, "n1", "c1") == "10.202.5.2" })
}

// The change-to-answer time of the state source: write a file, poll the
// snapshot until the answer changes. The target is p99 ≤ 10 ms.
func BenchmarkStateChangeToAnswer(b *testing.B) {
	dir := b.TempDir()
	state.Write(dir, netFile("n1", "10.202.5.2"))
	st := NewStore("state")
	src := NewStateDir(dir)
	src.Log = Discard
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go src.Run(ctx, st)
	for !st.Ready() {
		time.Sleep(time.Millisecond)
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ip := fmt.Sprintf("10.202.5.%d", 10+i%200)
		t0 := time.Now()
		state.Write(dir, netFile("n1", ip))
		for addrOf(st, "n1", "c1") != ip {
			time.Sleep(20 * time.Microsecond)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	s := append([]time.Duration(nil), lat...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	b.ReportMetric(float64(s[len(s)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(s[(len(s)*99)/100].Microseconds())/1000, "p99-ms")
}

// The same with 10,000 endpoints over 100 networks: one network changes.
func BenchmarkStateChangeToAnswerLarge(b *testing.B) {
	dir := b.TempDir()
	for n := 0; n < 100; n++ {
		f := &state.File{Network: state.Network{ID: testID, Name: fmt.Sprintf("net%d", n), Subnet: netip.MustParsePrefix(fmt.Sprintf("10.202.%d.0/24", n))}}
		for e := 0; e < 100; e++ {
			f.Endpoints = append(f.Endpoints, state.Endpoint{ID: testID, Name: fmt.Sprintf("c%d", e), IPv4: netip.MustParseAddr(fmt.Sprintf("10.202.%d.%d", n, e+2)), Container: fmt.Sprintf("n%d-c%d", n, e)})
		}
		state.Write(dir, f)
	}
	f, _ := state.Read(state.NetworkPath(dir, "net42"))
	st := NewStore("state")
	src := NewStateDir(dir)
	src.Log = Discard
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go src.Run(ctx, st)
	for !st.Ready() {
		time.Sleep(time.Millisecond)
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ip := fmt.Sprintf("10.202.42.%d", 200+i%50)
		f.Endpoints[0].IPv4 = netip.MustParseAddr(ip)
		state.Write(dir, f)
		t0 := time.Now()
		for addrOf(st, "net42", "c0") != ip {
			time.Sleep(20 * time.Microsecond)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// Read-your-writes: once syncack.Sync returns after a state write, the
// snapshot already answers accordingly, every time, without waiting for
// the file watch. Without Sync, an immediate look often sees the old state.
func TestStateDirSyncReadYourWrites(t *testing.T) {
	dir := t.TempDir()
	state.Write(dir, netFile("n1", "10.202.5.2"))
	st, _ := startStateDir(t, dir)
	socks, _ := filepath.Glob(filepath.Join(syncack.ServersPath(dir), "*.sock"))
	if len(socks) != 1 {
		t.Fatalf("servers' sockets %v, want this source's one", socks)
	}

	const rounds = 200
	missedWithout := 0
	for i := 0; i < rounds; i++ {
		ip := fmt.Sprintf("10.202.5.%d", 10+i%200)
		if err := state.WriteNoSync(dir, netFile("n1", ip)); err != nil {
			t.Fatal(err)
		}
		if addrOf(st, "n1", "c1") != ip {
			missedWithout++
		}
		if err := syncack.Sync(dir, []string{"n1"}, syncack.DefaultTimeout); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if got := addrOf(st, "n1", "c1"); got != ip {
			t.Fatalf("round %d: after Sync c1.n1 is %s, want %s", i, got, ip)
		}
	}
	t.Logf("without Sync, %d of %d writes were not visible at once; with it, %d of %d were", missedWithout, rounds, rounds, rounds)

	// A removed network (network rm) is gone when Sync returns.
	if err := os.Remove(state.NetworkPath(dir, "n1")); err != nil {
		t.Fatal(err)
	}
	if err := syncack.Sync(dir, []string{"n1"}, syncack.DefaultTimeout); err != nil {
		t.Fatal(err)
	}
	if st.Snapshot().Network("n1") != nil {
		t.Fatal("n1 still served after its file was removed and synced")
	}
	// A bad name is refused, naming it.
	if err := syncack.Sync(dir, []string{"../etc/passwd"}, syncack.DefaultTimeout); err == nil || !strings.Contains(err.Error(), "../etc/passwd") {
		t.Fatalf("bad network name: %v", err)
	}
}

// The source's socket goes when it stops.
func TestStateDirRemovesSyncSocket(t *testing.T) {
	dir := t.TempDir()
	st := NewStore("state")
	src := NewStateDir(dir)
	src.Log = Discard
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { src.Run(ctx, st); close(done) }()
	eventually(t, "first load", st.Ready)
	glob := filepath.Join(syncack.ServersPath(dir), "*.sock")
	if socks, _ := filepath.Glob(glob); len(socks) != 1 {
		t.Fatalf("sockets while running: %v", socks)
	}
	cancel()
	<-done
	if socks, _ := filepath.Glob(glob); len(socks) != 0 {
		t.Fatalf("sockets left after Run returned: %v", socks)
	}
}
