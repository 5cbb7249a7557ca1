package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netalias/netalias/agent/firewall"
	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/state"
)

// Library tests use 10.201.100.0/24 … 10.201.139.0/24 and namespaces nat-….
var subnetSeq atomic.Int32

func testSubnet() string { return fmt.Sprintf("10.201.%d.0/24", 100+subnetSeq.Add(1)) }

func rnd() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newTestManager(t *testing.T) *Manager {
	t.Helper()
	testenv.RequireRoot(t)
	pool := testSubnet()
	pools, _ := ipam.ParsePools(pool + ":26")
	m, err := New(Options{StateDir: t.TempDir(), Pools: pools})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func testNetns(t *testing.T) string {
	t.Helper()
	name := "nat-" + rnd()
	p, err := netns.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(name) })
	return p
}

func createNet(t *testing.T, m *Manager, spec NetworkSpec) *state.Network {
	t.Helper()
	n, err := m.CreateNetwork(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.RemoveNetwork(spec.Name, true) })
	return n
}

func linkExists(t *testing.T, name string) bool {
	t.Helper()
	names, err := link.LinkNames()
	if err != nil {
		t.Fatal(err)
	}
	return names[name]
}

// failingFiles fails the n-th write of network files (1-based).
type failingFiles struct {
	stateFiles
	n     int
	count *int
}

func (f failingFiles) fail() error {
	*f.count++
	if *f.count == f.n {
		return errors.New("injected failure")
	}
	return nil
}

func (f failingFiles) Write(sf *state.File) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.stateFiles.Write(sf)
}

func (f failingFiles) WriteIntent(sf *state.File) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.stateFiles.WriteIntent(sf)
}

// A connect that fails after the veth exists (its commit write fails)
// leaves no veth, no lease and the state file as it was.
func TestConnectFailureRollsBack(t *testing.T) {
	m := newTestManager(t)
	net := "rb" + rnd()[:4]
	createNet(t, m, NetworkSpec{Name: net, Subnet: testSubnet()})
	ns := testNetns(t)
	before, _ := os.ReadFile(state.NetworkPath(m.StateDir(), net))
	linksBefore, _ := link.LinkNames()

	real := m.files
	m.files = failingFiles{stateFiles: real, n: 2, count: new(int)} // intent, then commit
	if _, err := m.Connect(ConnectSpec{Network: net, Netns: ns, Name: "web"}); err == nil {
		t.Fatal("connect succeeded despite the injected failure")
	}
	after, _ := os.ReadFile(state.NetworkPath(m.StateDir(), net))
	if string(after) != string(before) {
		t.Errorf("state changed:\n%s\nwas:\n%s", after, before)
	}
	linksAfter, _ := link.LinkNames()
	for n := range linksAfter {
		if !linksBefore[n] {
			t.Errorf("link %s left behind", n)
		}
	}
	if has4, has6, _ := link.DefaultRoutes(ns); has4 || has6 {
		t.Error("default route left in the namespace")
	}
	// And the next connect works and takes the first address.
	m.files = real
	ep, err := m.Connect(ConnectSpec{Network: net, Netns: ns, Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if ep.IfName != "eth0" {
		t.Errorf("ifname %q after a rolled-back connect, want eth0", ep.IfName)
	}
}

// failingSysctl fails, after the bridge and the rules exist.
type failingSysctl struct{}

func (failingSysctl) EnableForwarding(bool) error { return errors.New("injected failure") }

// recordingLinks remembers the bridges it made.
type recordingLinks struct {
	Links
	bridges *[]string
}

func (r recordingLinks) CreateBridge(b link.Bridge) error {
	*r.bridges = append(*r.bridges, b.Name)
	return r.Links.CreateBridge(b)
}

// A create that fails after the bridge and rules exist leaves neither.
func TestCreateNetworkFailureRollsBack(t *testing.T) {
	m := newTestManager(t)
	var bridges []string
	m.k.Sysctl = failingSysctl{}
	m.k.Links = recordingLinks{Links: m.k.Links, bridges: &bridges}
	net := "rbc" + rnd()[:4]
	if _, err := m.CreateNetwork(NetworkSpec{Name: net, Subnet: testSubnet()}); err == nil {
		m.RemoveNetwork(net, true)
		t.Fatal("create succeeded despite the injected failure")
	}
	if _, err := os.Stat(state.NetworkPath(m.StateDir(), net)); !os.IsNotExist(err) {
		t.Errorf("state file left: %v", err)
	}
	if n, _ := firewall.HostForwardRules(m.FirewallTable()); n != 0 {
		t.Errorf("%d FORWARD rules left", n)
	}
	if tableExists(t, m.FirewallTable()) {
		t.Error("nft table left behind")
	}
	if len(bridges) != 1 {
		t.Fatalf("bridge step not reached (%q)", bridges)
	}
	if linkExists(t, bridges[0]) {
		t.Errorf("bridge %s left behind", bridges[0])
	}
	snap, _ := m.Snapshot()
	if len(snap.Files) != 0 {
		t.Errorf("networks left: %v", snap.Names())
	}
}

// The firewall table exists while networks do and goes with the last one;
// the host FORWARD rules follow.
func TestFirewallTableFollowsNetworks(t *testing.T) {
	m := newTestManager(t)
	a, b := "fwa"+rnd()[:4], "fwb"+rnd()[:4]
	createNet(t, m, NetworkSpec{Name: a, Subnet: testSubnet()})
	createNet(t, m, NetworkSpec{Name: b, Subnet: testSubnet(), Internal: true})
	if !tableExists(t, m.FirewallTable()) {
		t.Fatal("table missing")
	}
	if err := m.RemoveNetwork(a, false); err != nil {
		t.Fatal(err)
	}
	if !tableExists(t, m.FirewallTable()) {
		t.Fatal("table removed while a network remains")
	}
	if err := m.RemoveNetwork(b, false); err != nil {
		t.Fatal(err)
	}
	if tableExists(t, m.FirewallTable()) {
		t.Fatal("table left after the last network")
	}
	if n, _ := firewall.HostForwardRules(m.FirewallTable()); n != 0 {
		t.Errorf("%d FORWARD rules left", n)
	}
}

// A veth left pending by a reaper that never ran is deleted by a later
// reconcile once it is stale.
func TestStalePendingVethIsDeleted(t *testing.T) {
	m := newTestManager(t)
	m.reap = func() {} // the reaper "died"
	net := "pend" + rnd()[:4]
	createNet(t, m, NetworkSpec{Name: net, Subnet: testSubnet()})
	ns := testNetns(t)
	ep, err := m.Connect(ConnectSpec{Network: net, Netns: ns})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Disconnect(net, ns); err != nil {
		t.Fatal(err)
	}
	if !linkExists(t, ep.HostVeth) {
		t.Fatal("veth gone although no reaper ran")
	}
	// Age the entry instead of sleeping.
	lk, snap, _ := m.begin()
	f := snap.Files[net]
	f.PendingDelete[0].Since = time.Now().Add(-time.Minute)
	m.store.Write(f)
	lk.Unlock()
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if linkExists(t, ep.HostVeth) {
		t.Fatal("stale pending veth not deleted")
	}
	snap, _ = m.Snapshot()
	if len(snap.Files[net].PendingDelete) != 0 {
		t.Errorf("pending list not drained: %+v", snap.Files[net].PendingDelete)
	}
}

func tableExists(t *testing.T, name string) bool {
	t.Helper()
	out, err := run("nft", "list", "tables")
	if err != nil {
		t.Fatal(err)
	}
	return containsLine(out, "table inet "+name)
}

// Rules wiped from outside (a Docker restart rewrites FORWARD) come back
// with EnsureFirewall, which the agent runs every cycle.
func TestEnsureFirewallRestoresRules(t *testing.T) {
	m := newTestManager(t)
	net := "fwr" + rnd()[:4]
	createNet(t, m, NetworkSpec{Name: net, Subnet: testSubnet()})
	snap, _ := m.Snapshot()
	if ok, err := firewall.Healthy(m.FirewallTable(), fwNets(snap.Files)); err != nil || !ok {
		t.Fatalf("healthy after create = %v, %v", ok, err)
	}
	if err := firewall.Sync(m.FirewallTable(), nil); err != nil { // wipe ours only
		t.Fatal(err)
	}
	if ok, _ := firewall.Healthy(m.FirewallTable(), fwNets(snap.Files)); ok {
		t.Fatal("healthy after the rules were wiped")
	}
	if err := m.EnsureFirewall(); err != nil {
		t.Fatal(err)
	}
	if ok, err := firewall.Healthy(m.FirewallTable(), fwNets(snap.Files)); err != nil || !ok {
		t.Fatalf("not restored: %v, %v", ok, err)
	}
}

// After a reboot the bridge is gone but the state remains: the next
// operation recreates it with its gateway address.
func TestMissingBridgeIsRestored(t *testing.T) {
	m := newTestManager(t)
	net := "boot" + rnd()[:4]
	n := createNet(t, m, NetworkSpec{Name: net, Subnet: testSubnet()})
	if err := link.DeleteLink(n.Bridge); err != nil {
		t.Fatal(err)
	}
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if !linkExists(t, n.Bridge) {
		t.Fatal("bridge not restored")
	}
	out, _ := run("ip", "-o", "addr", "show", "dev", n.Bridge)
	if !strings.Contains(out, n.Gateway.String()+"/24") {
		t.Errorf("restored bridge lacks its gateway %s: %q", n.Gateway, out)
	}
	ns := testNetns(t)
	if _, err := m.Connect(ConnectSpec{Network: net, Netns: ns}); err != nil {
		t.Fatalf("connect after restore: %v", err)
	}
}

// A connect that died between creating its veth and recording the
// endpoint left an intent record: the next command deletes the veth.
func TestDeadConnectIntentIsCleaned(t *testing.T) {
	m := newTestManager(t)
	net := "dead" + rnd()[:4]
	createNet(t, m, NetworkSpec{Name: net, Subnet: testSubnet()})
	host := vethName(newID())
	if out, err := run("ip", "link", "add", host, "type", "veth", "peer", "name", parkName(newID())); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { link.DeleteLink(host) })
	lk, snap, err := m.begin()
	if err != nil {
		t.Fatal(err)
	}
	f := snap.Files[net]
	f.PendingDelete = append(f.PendingDelete, state.PendingVeth{Name: host, Since: time.Now(), Creating: true})
	m.store.Write(f)
	lk.Unlock()
	// A reaper must leave an intent alone (its connect may be running)...
	if names, _, _ := m.pendingNames(); len(names) != 0 {
		t.Fatalf("reaper would delete an intent record's veth: %v", names)
	}
	// ...a command holding the lock knows the connect is dead.
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if linkExists(t, host) {
		t.Fatal("veth of the dead connect left behind")
	}
	snap, _ = m.Snapshot()
	if len(snap.Files[net].PendingDelete) != 0 {
		t.Errorf("intent record left: %+v", snap.Files[net].PendingDelete)
	}
}

// The reaper deletes pending veths together through their link group, and
// never deletes by group when the group holds a link that is not pending.
func TestReapByGroupDeletesOnlyOurs(t *testing.T) {
	m := newTestManager(t)
	m.reap = func() {} // reap by hand below
	net := "grp" + rnd()[:4]
	createNet(t, m, NetworkSpec{Name: net, Subnet: testSubnet()})
	var veths []string
	for i := 0; i < 3; i++ {
		ns := testNetns(t)
		ep, err := m.Connect(ConnectSpec{Network: net, Netns: ns})
		if err != nil {
			t.Fatal(err)
		}
		veths = append(veths, ep.HostVeth)
		if err := m.Disconnect(net, ns); err != nil {
			t.Fatal(err)
		}
	}
	// A foreign link that happens to sit in our group.
	foreign := "natf" + rnd()
	if out, err := run("ip", "link", "add", foreign, "type", "veth", "peer", "name", foreign+"p"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { link.DeleteLink(foreign) })
	if out, err := run("ip", "link", "set", foreign, "group", fmt.Sprint(m.group)); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := m.Reap(); err != nil {
		t.Fatal(err)
	}
	for _, v := range veths {
		if linkExists(t, v) {
			t.Errorf("pending veth %s not reaped", v)
		}
	}
	if !linkExists(t, foreign) {
		t.Fatal("reaper deleted a link that was not ours")
	}
	// Without strangers in the group, one request deletes them all.
	link.DeleteLink(foreign)
	veths = veths[:0]
	for i := 0; i < 3; i++ {
		ns := testNetns(t)
		ep, err := m.Connect(ConnectSpec{Network: net, Netns: ns})
		if err != nil {
			t.Fatal(err)
		}
		veths = append(veths, ep.HostVeth)
		m.Disconnect(net, ns)
	}
	if members, _ := link.GroupMembers(m.group); len(members) != 3 {
		t.Fatalf("group members %v, want the 3 pending veths", members)
	}
	if err := m.Reap(); err != nil {
		t.Fatal(err)
	}
	for _, v := range veths {
		if linkExists(t, v) {
			t.Errorf("pending veth %s not reaped", v)
		}
	}
	snap, _ := m.Snapshot()
	if p := snap.Files[net].PendingDelete; len(p) != 0 {
		t.Errorf("pending list not drained: %+v", p)
	}
}

// A dual-stack container that leaves the network carrying its default
// routes gets both back through its other network (real kernel).
func TestDualStackDefaultRoutesMove(t *testing.T) {
	m := newTestManager(t)
	sub6 := func(s string) string { // 10.201.N.0/24 → fd00:201:N::/64
		return "fd00:201:" + strings.Split(s, ".")[2] + "::/64"
	}
	s1, s2 := testSubnet(), testSubnet()
	n1, n2 := "ds1"+rnd()[:4], "ds2"+rnd()[:4]
	createNet(t, m, NetworkSpec{Name: n1, Subnet: s1, Subnet6: sub6(s1)})
	createNet(t, m, NetworkSpec{Name: n2, Subnet: s2, Subnet6: sub6(s2)})
	ns := testNetns(t)
	if _, err := m.Connect(ConnectSpec{Network: n1, Netns: ns}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Connect(ConnectSpec{Network: n2, Netns: ns}); err != nil {
		t.Fatal(err)
	}
	if err := m.Disconnect(n1, ns); err != nil {
		t.Fatal(err)
	}
	v4, v6, err := link.DefaultRoutes(ns)
	if err != nil || !v4 || !v6 {
		out, _ := run("ip", "netns", "exec", strings.TrimPrefix(ns, netns.RunDir+"/"), "ip", "-d", "route", "show", "table", "all")
		t.Fatalf("default routes after leaving %s: v4 %v v6 %v (%v)\n%s", n1, v4, v6, err, out)
	}
}
