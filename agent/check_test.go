package agent

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netalias/netalias/agent/internal/fakekernel"
	"github.com/netalias/netalias/state"
)

// Check and Repair against the fake kernel: one damage per kind of
// inconsistency, as a crash or a user leaves it.

// checkWorld is n1 (c1, c2 connected) and n2 (c1 connected).
func checkWorld(t *testing.T) (*Manager, *fakekernel.Kernel) {
	t.Helper()
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	mustCreate(t, m, NetworkSpec{Name: "n2", Subnet: "10.201.141.0/24", Internal: true})
	for _, c := range []string{"c1", "c2"} {
		fk.AddNetns(c)
		mustConnect(t, m, ConnectSpec{Network: "n1", Netns: c})
	}
	mustConnect(t, m, ConnectSpec{Network: "n2", Netns: "c1"})
	if bad, err := m.Check(); err != nil || len(bad) > 0 {
		t.Fatalf("fresh world: %q, %v", bad, err)
	}
	return m, fk
}

func endpointOf(t *testing.T, m *Manager, network, ns string) state.Endpoint {
	t.Helper()
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range snap.Files[network].Endpoints {
		if ep.Netns == "/run/netns/"+ns {
			return ep
		}
	}
	t.Fatalf("no endpoint of %s on %s", ns, network)
	return state.Endpoint{}
}

func TestCheckFindsAndRepairsEachInconsistency(t *testing.T) {
	for _, tc := range []struct {
		name     string
		damage   func(t *testing.T, m *Manager, fk *fakekernel.Kernel)
		want     string // a substring of the line naming it
		repaired bool
	}{
		{"stray temp file", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			p := filepath.Join(state.NetworksPath(m.StateDir()), ".n1.json.tmp-123")
			if err := os.WriteFile(p, []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, ".n1.json.tmp-123: stray temp file", true},
		{"resolver file missing", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			fk.SetResolver("c2", "", nil)
		}, "namespace /run/netns/c2: resolver file /etc/netns/c2/resolv.conf missing", true},
		{"resolver file wrong", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			fk.SetResolver("c1", "10.201.140.1", []string{"n1"})
		}, "namespace /run/netns/c1: resolver file /etc/netns/c1/resolv.conf says nameserver 10.201.140.1 search n1, want nameserver 10.201.140.1 search n1 n2", true},
		{"resolver file left behind", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			crashAtPoint(t, "disconnect:resolver", "before", func() { m.Disconnect("n1", "c2") })
		}, "resolver file /etc/netns/c2/resolv.conf left behind", true},
		{"bridge missing", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			snap, _ := m.Snapshot()
			fk.DeleteLink(snap.Files["n2"].Network.Bridge)
		}, "network n2: bridge na-", true},
		{"host veth missing (namespace gone)", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			fk.RemoveNetns("/run/netns/c2")
		}, "endpoint c2 on network n1: host veth nav", true},
		{"host veth off its bridge", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			ep := endpointOf(t, m, "n1", "c2")
			l := fk.State().Links[ep.HostVeth]
			l.Master = ""
			fk.AddLink(ep.HostVeth, l)
		}, `endpoint c2 on network n1: host veth nav`, true},
		{"stray veth of ours", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			fk.AddLink("navdeadbeef0000", fakekernel.Link{Kind: "veth", Group: m.liveGroup()})
		}, "veth navdeadbeef0000: ours", true},
		{"interrupted connect", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			fk.AddNetns("c3")
			crashAtPoint(t, "connect:commit", "before", func() { m.Connect(ConnectSpec{Network: "n1", Netns: "c3"}) })
		}, "interrupted connect", true},
		{"interrupted disconnect", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			crashAtPoint(t, "disconnect:unplug", "before", func() { m.Disconnect("n1", "c2") })
		}, "interrupted disconnect (not unplugged)", true},
		{"interrupted network create", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			crashAtPoint(t, "network-create:bridge", "after", func() { m.CreateNetwork(NetworkSpec{Name: "n3"}) })
		}, "network n3: interrupted network create", true},
		{"interrupted network rm", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			m.Disconnect("n2", "c1")
			crashAtPoint(t, "network-rm:firewall", "after", func() { m.RemoveNetwork("n2", false) })
		}, "network n2: interrupted network rm", true},
		{"address missing inside", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			ep := endpointOf(t, m, "n1", "c2")
			in := fk.State().Netns[ep.Netns][ep.IfName]
			in.Addrs = nil
			fk.PutIface(ep.Netns, ep.IfName, in, true)
		}, "interface eth0 (endpoint c2 on network n1) does not hold 10.201.140.3", false},
		{"interface missing inside", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			ep := endpointOf(t, m, "n1", "c2")
			fk.PutIface(ep.Netns, ep.IfName, fakekernel.Iface{}, false)
		}, "namespace /run/netns/c2: interface eth0 (endpoint c2 on network n1) missing", false},
		{"leftover interface holding the address", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			ep := endpointOf(t, m, "n1", "c2")
			fk.PutIface(ep.Netns, "eth7", fakekernel.Iface{Up: true, Addrs: []netip.Prefix{netip.PrefixFrom(ep.IPv4, 24)}}, true)
		}, "address 10.201.140.3 on 2 interfaces eth", false},
		{"default route missing", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			ep := endpointOf(t, m, "n1", "c2")
			in := fk.State().Netns[ep.Netns][ep.IfName]
			in.Routes = nil
			fk.PutIface(ep.Netns, ep.IfName, in, true)
		}, "namespace /run/netns/c2: no default route via 10.201.140.1 (network n1)", true},
		{"firewall rules missing", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			fk.Sync(m.FirewallTable(), nil)
		}, "rules missing or out of date", true},
		{"corrupt state file", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			if err := os.WriteFile(state.NetworkPath(m.StateDir(), "n9"), []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "n9.json: corrupt", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, fk := checkWorld(t)
			tc.damage(t, m, fk)
			bad, err := m.Check()
			if err != nil {
				t.Fatal(err)
			}
			if !anyLineHas(bad, tc.want) {
				t.Fatalf("check found %q, want a line with %q", bad, tc.want)
			}
			left, err := m.Repair()
			if err != nil {
				t.Fatal(err)
			}
			if tc.repaired && len(left) > 0 {
				t.Fatalf("after repair: %q", left)
			}
			if !tc.repaired && !anyLineHas(left, tc.want) {
				t.Fatalf("after repair %q, want %q still reported (reconcile cannot fix it)", left, tc.want)
			}
		})
	}
}

func anyLineHas(lines []string, want string) bool {
	for _, l := range lines {
		if strings.Contains(l, want) {
			return true
		}
	}
	return false
}

// crashAtPoint runs op and stops it dead at a crash point, as a SIGKILL
// would (no rollback runs; the lock is released as a dying process's is).
func crashAtPoint(t *testing.T, step, pos string, op func()) {
	t.Helper()
	type killed struct{}
	reached := false
	stepHook = func(s, p string) {
		if s == step && p == pos {
			reached = true
			panic(killed{})
		}
	}
	defer func() { stepHook = nil }()
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(killed); !ok {
					panic(r)
				}
			}
		}()
		op()
	}()
	if !reached {
		t.Fatalf("crash point %s:%s never reached", step, pos)
	}
}

// The crash matrix on the fake kernel: every step of every operation
// (Steps, run's excepted: it needs real namespaces; test/ covers it) is
// cut short before and after; then an ordinary command (connect, which
// reconciles first) must leave no inconsistency, and the namespace that
// was being connected or disconnected exactly one interface on the
// network.
func TestCrashAtEveryStepThenOneCommandRestoresTheInvariant(t *testing.T) {
	ops := map[string]func(m *Manager){
		"connect":        func(m *Manager) { m.Connect(ConnectSpec{Network: "n1", Netns: "c3"}) },
		"disconnect":     func(m *Manager) { m.Disconnect("n1", "c2") },
		"network-create": func(m *Manager) { m.CreateNetwork(NetworkSpec{Name: "n3"}) },
		"network-rm":     func(m *Manager) { m.RemoveNetwork("n2", true) },
	}
	covered := 0
	for _, step := range Steps {
		op, _, _ := strings.Cut(step, ":")
		run, ok := ops[op]
		if !ok {
			// run needs real namespaces (test/ covers it); the runtime
			// fronts have their own rollback tests.
			if op != "run" && op != "attach" && op != "docker-endpoint" {
				t.Errorf("step %s: no operation in this test runs it", step)
			}
			continue
		}
		for _, pos := range []string{"before", "after"} {
			t.Run(step+":"+pos, func(t *testing.T) {
				m, fk := checkWorld(t)
				fk.AddNetns("c3")
				crashAtPoint(t, step, pos, func() { run(m) })
				for _, ns := range []string{"c2", "c3"} {
					_, err := m.Connect(ConnectSpec{Network: "n1", Netns: ns})
					if err != nil && !strings.Contains(err.Error(), "already") {
						t.Fatalf("connect %s after the crash: %v", ns, err)
					}
				}
				if bad, err := m.Check(); err != nil || len(bad) > 0 {
					t.Fatalf("after one command: %q, %v", bad, err)
				}
				snap, _ := m.Snapshot()
				sub := snap.Files["n1"].Network.Subnet
				for _, ns := range []string{"c2", "c3"} {
					var on []string
					for name, in := range fk.State().Netns["/run/netns/"+ns] {
						for _, a := range in.Addrs {
							if sub.Contains(a.Addr()) {
								on = append(on, fmt.Sprintf("%s=%s", name, a.Addr()))
							}
						}
					}
					if len(on) != 1 {
						t.Errorf("namespace %s: interfaces on n1: %v, want exactly one", ns, on)
					}
				}
			})
			covered++
		}
	}
	if covered < 2*16 {
		t.Errorf("only %d crash points covered", covered)
	}
}
