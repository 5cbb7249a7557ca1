package agent

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/netalias/netalias/agent/internal/fakekernel"
	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/state"
)

// Tests against the fake kernel: no privileges needed.

// logBuf collects a Manager's log.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newFakeManager(t *testing.T) (*Manager, *fakekernel.Kernel, *logBuf) {
	t.Helper()
	fk := fakekernel.New()
	pools, err := ipam.ParsePools("10.201.140.0/22:24")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	m, err := New(Options{StateDir: t.TempDir(), Pools: pools,
		Kernel: Kernel{Links: fk, Veths: fk, Sysctl: fk, Firewall: fk, Resolver: fk, Namespaces: fk},
		Log:    slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	m.files = fakekernel.Files{K: fk, Inner: m.store}
	return m, fk, logs
}

// world is what an operation may change: the state files and the kernel.
type world struct {
	files  map[string]string
	kernel fakekernel.State
}

func capture(t *testing.T, m *Manager, fk *fakekernel.Kernel) world {
	t.Helper()
	w := world{files: map[string]string{}, kernel: fk.State()}
	ents, err := os.ReadDir(state.NetworksPath(m.StateDir()))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(state.NetworksPath(m.StateDir()) + "/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		w.files[e.Name()] = string(b)
	}
	return w
}

func (w world) diff(o world) string {
	var d []string
	if !reflect.DeepEqual(w.files, o.files) {
		d = append(d, fmt.Sprintf("state files:\n%v\nwere:\n%v", o.files, w.files))
	}
	if !reflect.DeepEqual(w.kernel, o.kernel) {
		d = append(d, fmt.Sprintf("kernel:\n%+v\nwas:\n%+v", o.kernel, w.kernel))
	}
	return strings.Join(d, "\n")
}

// failEveryStep runs op with its first, second, … mutating call failing
// until op succeeds. Each failure must return the injected error and
// leave the world as it was (check, when non-nil, replaces that check).
// It returns the calls of the successful run.
func failEveryStep(t *testing.T, m *Manager, fk *fakekernel.Kernel, op func() error, check func(t *testing.T, n int, call string, before world)) []string {
	t.Helper()
	for n := 1; n < 50; n++ {
		before := capture(t, m, fk)
		fk.FailNth(n)
		err := op()
		calls := fk.Calls()
		fk.FailNth(0)
		if n > len(calls) {
			if err != nil {
				t.Fatalf("op failed without an injected failure: %v", err)
			}
			if n == 1 {
				t.Fatal("op made no mutating call")
			}
			return calls[:n-1]
		}
		call := calls[n-1]
		// Names without the random IDs, so a run's test names are stable.
		t.Run(fmt.Sprintf("fail %d %s", n, randomHex.ReplaceAllString(call, "ID")), func(t *testing.T) {
			if check != nil {
				check(t, n, call, before)
				return
			}
			if !errors.Is(err, fakekernel.ErrInjected) {
				t.Fatalf("err = %v, want the injected failure", err)
			}
			if d := before.diff(capture(t, m, fk)); d != "" {
				t.Errorf("not rolled back (calls %q):\n%s", calls, d)
			}
		})
	}
	t.Fatal("op never succeeded")
	return nil
}

var randomHex = regexp.MustCompile(`[0-9a-f]{8,}`)

func mustCreate(t *testing.T, m *Manager, spec NetworkSpec) *state.Network {
	t.Helper()
	n, err := m.CreateNetwork(spec)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustConnect(t *testing.T, m *Manager, spec ConnectSpec) *state.Endpoint {
	t.Helper()
	ep, err := m.Connect(spec)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func TestFakeConnectRollsBackAtEveryStep(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24", Subnet6: "fd00:201:140::/64"})
	fk.AddNetns("c0")
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c0", Aliases: []string{"zero"}})
	fk.AddNetns("c1")
	calls := failEveryStep(t, m, fk, func() error {
		_, err := m.Connect(ConnectSpec{Network: "n1", Netns: "c1", Aliases: []string{"one"}})
		return err
	}, nil)
	want := []string{"WriteIntent n1", "Attach nav", "Write n1", "Resolver.Write c1"}
	if len(calls) != len(want) {
		t.Fatalf("steps %q, want %q", calls, want)
	}
	for i := range want {
		if !strings.HasPrefix(calls[i], want[i]) {
			t.Errorf("step %d is %q, want %q…", i, calls[i], want[i])
		}
	}
	// The connect that finally succeeded is complete.
	snap, _ := m.Snapshot()
	f := snap.Files["n1"]
	if len(f.Endpoints) != 2 || len(f.PendingDelete) != 0 || !f.Leases["c1"].IPv6.IsValid() {
		t.Fatalf("state after connect: %+v", f)
	}
	if in := fk.State().Netns["/run/netns/c1"]["eth0"]; len(in.Addrs) != 2 || len(in.Routes) != 2 {
		t.Errorf("c1's eth0: %+v (want two addresses and both default routes)", in)
	}
}

func TestFakeCreateNetworkRollsBackAtEveryStep(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	var cerr error
	calls := failEveryStep(t, m, fk, func() error {
		_, cerr = m.CreateNetwork(NetworkSpec{Name: "n2", IPv6: true})
		return cerr
	}, func(t *testing.T, n int, call string, before world) {
		if n == 5 { // the commit (mark cleared): logged, the network stands
			snap, _ := m.Snapshot()
			if cerr != nil || snap.Files["n2"] == nil || snap.Files["n2"].Op != state.OpCreating {
				t.Fatalf("failed commit: err %v, file %+v", cerr, snap.Files["n2"])
			}
			if err := m.RemoveNetwork("n2", false); err != nil {
				t.Fatal(err)
			}
			return
		}
		if !errors.Is(cerr, fakekernel.ErrInjected) {
			t.Fatalf("err = %v, want the injected failure", cerr)
		}
		if d := before.diff(capture(t, m, fk)); d != "" {
			t.Errorf("not rolled back:\n%s", d)
		}
	})
	want := []string{"Write n2", "CreateBridge na-", "Sync netalias-", "EnableForwarding v6=true", "Write n2"}
	if len(calls) != len(want) {
		t.Fatalf("steps %q, want %q", calls, want)
	}
	for i := range want {
		if !strings.HasPrefix(calls[i], want[i]) {
			t.Errorf("step %d is %q, want %q…", i, calls[i], want[i])
		}
	}
	st := fk.State()
	if len(st.Tables[m.FirewallTable()]) != 2 || !st.Forward6 {
		t.Errorf("after create: tables %v, forward6 %v", st.Tables, st.Forward6)
	}
}

func TestFakeRemoveNetworkRollsBackAtEveryStep(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	n2 := mustCreate(t, m, NetworkSpec{Name: "n2", Subnet: "10.201.141.0/24", Subnet6: "fd00:201:141::/64"})
	calls := failEveryStep(t, m, fk, func() error { return m.RemoveNetwork("n2", false) }, nil)
	if len(calls) != 4 {
		t.Errorf("steps %q, want mark, firewall, bridge, state", calls)
	}
	st := fk.State()
	if _, ok := st.Links[n2.Bridge]; ok || len(st.Tables[m.FirewallTable()]) != 1 {
		t.Errorf("after rm: links %v, tables %v", st.Links, st.Tables)
	}
}

// Disconnect commits when its state write succeeds: a failure there
// changes nothing; any later failure is logged, and the endpoint is gone
// all the same (the veth deleted at once or by the reaper).
func TestFakeDisconnectAtEveryStep(t *testing.T) {
	m, fk, logs := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24", Subnet6: "fd00:201:140::/64"})
	mustCreate(t, m, NetworkSpec{Name: "n2", Subnet: "10.201.141.0/24", Subnet6: "fd00:201:141::/64"})
	fk.AddNetns("c1")
	clean := fk.State() // c1 on no network
	var err error
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c1"})
	mustConnect(t, m, ConnectSpec{Network: "n2", Netns: "c1"})
	calls := failEveryStep(t, m, fk, func() error {
		err = m.Disconnect("n1", "c1")
		return err
	}, func(t *testing.T, n int, call string, before world) {
		if n == 1 { // the commit
			if !errors.Is(err, fakekernel.ErrInjected) {
				t.Fatalf("err = %v, want the injected failure", err)
			}
			if d := before.diff(capture(t, m, fk)); d != "" {
				t.Errorf("a failed commit changed things:\n%s", d)
			}
			return
		}
		if err != nil {
			t.Fatalf("disconnect failed after its commit: %v", err)
		}
		if !strings.Contains(logs.String(), "injected failure") {
			t.Errorf("the failure of %s was not logged:\n%s", call, logs)
		}
		if err := m.Reap(); err != nil {
			t.Fatal(err)
		}
		snap, _ := m.Snapshot()
		if f := snap.Files["n1"]; len(f.Endpoints) != 0 || len(f.PendingDelete) != 0 {
			t.Errorf("n1 after disconnect: %+v", f)
		}
		for name, l := range fk.State().Links {
			if l.Kind == "veth" && l.Master != "na-"+snap.Files["n2"].Network.ID[:12] {
				t.Errorf("veth %s left: %+v", name, l)
			}
		}
		// Reset: back on n1 for the next step's failure.
		mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c1"})
	})
	if len(calls) < 3 {
		t.Errorf("steps %q: want at least commit, unplug, resolver", calls)
	}
	if err := m.Disconnect("n2", "c1"); err != nil {
		t.Fatal(err)
	}
	st := fk.State()
	if !reflect.DeepEqual(st.Links, clean.Links) || !reflect.DeepEqual(st.Netns["/run/netns/c1"]["lo"], fakekernel.Iface{Up: true}) {
		t.Errorf("kernel after disconnecting everything:\n%+v\nwas:\n%+v", st.Links, clean.Links)
	}
	for name := range st.Netns["/run/netns/c1"] {
		if name != "lo" && !strings.HasPrefix(name, "nax") {
			t.Errorf("interface %s left in c1", name)
		}
	}
}

// An undo that fails is logged with what it left behind and joined to
// the error.
func TestFakeFailedUndoIsLogged(t *testing.T) {
	m, fk, logs := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	fk.AddNetns("c1")
	fk.FailWhen(func(c string) bool {
		return strings.HasPrefix(c, "Resolver.Write c1") || strings.HasPrefix(c, "DeleteLink nav")
	})
	_, err := m.Connect(ConnectSpec{Network: "n1", Netns: "c1"})
	fk.FailWhen(nil)
	if err == nil || !strings.Contains(err.Error(), "undo attach") {
		t.Fatalf("err = %v, want the failed undos named", err)
	}
	var veth string
	for name, l := range fk.State().Links {
		if l.Kind == "veth" {
			veth = name
		}
	}
	if veth == "" {
		t.Fatal("the veth whose deletion failed is gone?")
	}
	if out := logs.String(); !strings.Contains(out, "step=attach") || !strings.Contains(out, veth) || !strings.Contains(out, "undo failed") {
		t.Errorf("log does not name the step and the veth left behind:\n%s", out)
	}
	// The next command's reconcile deletes the leftover (its intent record
	// was restored away, but the veth is stale on no bridge's endpoint):
	// the state is consistent.
	snap, _ := m.Snapshot()
	if f := snap.Files["n1"]; len(f.Endpoints) != 0 {
		t.Errorf("endpoint recorded despite the failure: %+v", f.Endpoints)
	}
}

// network rm --force disconnects the endpoints, then removes the network.
func TestFakeRemoveNetworkForce(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	fk.AddNetns("c1")
	clean := fk.State()
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c1"})
	if err := m.RemoveNetwork("n1", false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("rm without force: %v", err)
	}
	if err := m.RemoveNetwork("n1", true); err != nil {
		t.Fatal(err)
	}
	st := fk.State()
	if len(st.Links) != 0 || len(st.Tables) != 0 || len(st.Resolv) != 0 {
		t.Errorf("left after rm --force: links %v tables %v resolv %v", st.Links, st.Tables, st.Resolv)
	}
	if _, ok := clean.Netns["/run/netns/c1"]; !ok {
		t.Fatal("setup")
	}
	for name := range st.Netns["/run/netns/c1"] {
		if name != "lo" {
			t.Errorf("interface %s left in c1", name)
		}
	}
}

// Sticky addresses: a name that reconnects gets its addresses back, and
// they are kept free for it while it is away.
func TestFakeStickyLease(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	fk.AddNetns("a")
	fk.AddNetns("b")
	fk.AddNetns("c")
	a := mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "a"})
	if err := m.Disconnect("n1", "a"); err != nil {
		t.Fatal(err)
	}
	b := mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "b"})
	if b.IPv4 == a.IPv4 {
		t.Fatalf("b took a's remembered address %s", a.IPv4)
	}
	a2 := mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "a"})
	if a2.IPv4 != a.IPv4 || a2.MAC != a.MAC {
		t.Errorf("a came back as %s/%s, want %s/%s", a2.IPv4, a2.MAC, a.IPv4, a.MAC)
	}
	if _, err := m.Connect(ConnectSpec{Network: "n1", Netns: "c", IP: b.IPv4.String()}); err == nil {
		t.Error("--ip of an address in use accepted")
	}
}

// A namespace whose process died takes its veth with it: the next
// command drops the endpoint and rewrites the resolver files.
func TestFakeVanishedVethIsPruned(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	p := fk.AddNetns("c1")
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c1"})
	fk.RemoveNetns(p)
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	snap, _ := m.Snapshot()
	if n := len(snap.Files["n1"].Endpoints); n != 0 {
		t.Errorf("%d endpoints left", n)
	}
	if _, ok := fk.State().Resolv["c1"]; ok {
		t.Error("resolver file of the vanished namespace left")
	}
}

// After a reboot the bridge is gone but the state remains: the next
// operation recreates it with its gateways and the rules.
func TestFakeMissingBridgeIsRestored(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	n := mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24", Subnet6: "fd00:201:140::/64"})
	before := fk.State().Links[n.Bridge]
	if err := fk.DeleteLink(n.Bridge); err != nil {
		t.Fatal(err)
	}
	if err := fk.Sync(m.FirewallTable(), nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	st := fk.State()
	if !reflect.DeepEqual(st.Links[n.Bridge], before) {
		t.Errorf("restored bridge %+v, want %+v", st.Links[n.Bridge], before)
	}
	if len(st.Tables[m.FirewallTable()]) != 1 {
		t.Error("rules not restored with the bridge")
	}
}

// A connect that died after its intent left a veth: the next command
// deletes it and drops the record; a reaper leaves it alone.
func TestFakeDeadConnectIntentIsCleaned(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	host := vethName(newID())
	fk.AddLink(host, fakekernel.Link{Kind: "veth"})
	snap, _ := m.Snapshot()
	f := snap.Files["n1"]
	f.PendingDelete = append(f.PendingDelete, state.PendingVeth{Name: host, Since: now(), Creating: true})
	if err := m.store.Write(f); err != nil {
		t.Fatal(err)
	}
	if names, _, _ := m.pendingNames(); len(names) != 0 {
		t.Fatalf("reaper would delete an intent record's veth: %v", names)
	}
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if _, ok := fk.State().Links[host]; ok {
		t.Fatal("veth of the dead connect left behind")
	}
	snap, _ = m.Snapshot()
	if p := snap.Files["n1"].PendingDelete; len(p) != 0 {
		t.Errorf("intent record left: %+v", p)
	}
}

// Endpoints of a dead `netalias run` owner are reclaimed with their
// namespace and resolver file.
func TestFakeDeadOwnerIsReclaimed(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	fk.AddNetns("run1")
	alive := true
	fk.AliveFn = func(pid int, _ uint64) bool { return alive && pid == 4242 }
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "run1", Owner: &state.Owner{PID: 4242, StartTime: 1}})
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if snap, _ := m.Snapshot(); len(snap.Files["n1"].Endpoints) != 1 {
		t.Fatal("a live owner's endpoint was reclaimed")
	}
	alive = false
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	st := fk.State()
	if _, ok := st.Netns["/run/netns/run1"]; ok || len(st.DeletedNS) != 1 {
		t.Errorf("namespace of the dead owner not deleted: %v", st.DeletedNS)
	}
	if _, ok := st.Resolv["run1"]; ok {
		t.Error("resolver file of the dead owner left")
	}
	if err := m.Reap(); err != nil {
		t.Fatal(err)
	}
	if snap, _ := m.Snapshot(); len(snap.Files["n1"].Endpoints)+len(snap.Files["n1"].PendingDelete) != 0 {
		t.Errorf("state after reclaim: %+v", snap.Files["n1"])
	}
}

// Release (the end of `netalias run`) disconnects the container from
// every network and deletes its namespace and resolver file.
func TestFakeReleaseDisconnectsEverywhere(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	mustCreate(t, m, NetworkSpec{Name: "n2", Subnet: "10.201.141.0/24", Internal: true})
	p := fk.AddNetns("run1")
	fk.AddNetns("other")
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "run1"})
	mustConnect(t, m, ConnectSpec{Network: "n2", Netns: "run1"})
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "other"})
	if err := m.Release(p); err != nil {
		t.Fatal(err)
	}
	snap, _ := m.Snapshot()
	if len(snap.Files["n1"].Endpoints) != 1 || snap.Files["n1"].Endpoints[0].Name != "other" || len(snap.Files["n2"].Endpoints) != 0 {
		t.Errorf("endpoints after release: n1 %+v n2 %+v", snap.Files["n1"].Endpoints, snap.Files["n2"].Endpoints)
	}
	st := fk.State()
	if _, ok := st.Netns[p]; ok || !slices.Equal(st.DeletedNS, []string{"run1"}) {
		t.Errorf("namespace not deleted: %v", st.DeletedNS)
	}
	if _, ok := st.Resolv["run1"]; ok {
		t.Error("resolver file left")
	}
	if _, ok := st.Resolv["other"]; !ok {
		t.Error("another container's resolver file went too")
	}
}

// Bad input changes nothing and names what is wrong.
func TestFakeBadInputChangesNothing(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	fk.AddNetns("c1")
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c1"})
	fk.AddNetns("c2")
	for _, tc := range []struct {
		name    string
		op      func() error
		wantErr string
	}{
		{"unknown network", func() error { _, err := m.Connect(ConnectSpec{Network: "nope", Netns: "c2"}); return err }, `network "nope" not found`},
		{"unknown namespace", func() error { _, err := m.Connect(ConnectSpec{Network: "n1", Netns: "zz"}); return err }, `namespace "zz"`},
		{"connected twice", func() error { _, err := m.Connect(ConnectSpec{Network: "n1", Netns: "c1"}); return err }, "already connected"},
		{"name in use", func() error { _, err := m.Connect(ConnectSpec{Network: "n1", Netns: "c2", Name: "c1"}); return err }, "already in use"},
		{"--ip outside", func() error {
			_, err := m.Connect(ConnectSpec{Network: "n1", Netns: "c2", IP: "10.9.9.9"})
			return err
		}, "--ip 10.9.9.9"},
		{"--ip6 on a v4 network", func() error {
			_, err := m.Connect(ConnectSpec{Network: "n1", Netns: "c2", IP6: "fd00::9"})
			return err
		}, "no IPv6 subnet"},
		{"network exists", func() error { _, err := m.CreateNetwork(NetworkSpec{Name: "n1"}); return err }, "already exists"},
		{"subnet overlaps", func() error {
			_, err := m.CreateNetwork(NetworkSpec{Name: "n2", Subnet: "10.201.140.128/25"})
			return err
		}, `overlaps network "n1"`},
		{"subnet overlaps the host", func() error {
			fk.Host = []netip.Prefix{netip.MustParsePrefix("10.201.150.0/24")}
			_, err := m.CreateNetwork(NetworkSpec{Name: "n2", Subnet: "10.201.150.0/24"})
			fk.Host = nil
			return err
		}, "already in use on this host"},
		{"disconnect not connected", func() error { return m.Disconnect("n1", "c2") }, "not connected"},
		{"rm unknown", func() error { return m.RemoveNetwork("nope", false) }, "not found"},
		{"rm with endpoints", func() error { return m.RemoveNetwork("n1", false) }, "--force"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := capture(t, m, fk)
			fk.FailNth(0)
			checkErr(t, tc.op(), tc.wantErr)
			if calls := fk.Calls(); len(calls) != 0 {
				t.Errorf("bad input made kernel or state calls: %q", calls)
			}
			if d := before.diff(capture(t, m, fk)); d != "" {
				t.Errorf("bad input changed things:\n%s", d)
			}
		})
	}
}
