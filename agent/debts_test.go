package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netalias/netalias/agent/internal/fakekernel"
	"github.com/netalias/netalias/state"
)

// Debts from the review of issue 8, each with a test that failed before
// its fix.

// A dual-stack container that leaves the network carrying its default
// routes gets both back through its next non-internal network.
func TestFakeDualStackDefaultRoutesMoveOnDisconnect(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	n1 := mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24", Subnet6: "fd00:201:140::/64"})
	n2 := mustCreate(t, m, NetworkSpec{Name: "n2", Subnet: "10.201.141.0/24", Subnet6: "fd00:201:141::/64"})
	p := fk.AddNetns("c1")
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c1"})
	ep2 := mustConnect(t, m, ConnectSpec{Network: "n2", Netns: "c1"})
	if r := fk.State().Netns[p]["eth0"].Routes; !slices.Equal(r, []netipAddr{n1.Gateway, n1.Gateway6}) {
		t.Fatalf("routes via n1: %v", r)
	}
	if err := m.Disconnect("n1", "c1"); err != nil {
		t.Fatal(err)
	}
	got := fk.State().Netns[p][ep2.IfName].Routes
	if !slices.Equal(got, []netipAddr{n2.Gateway, n2.Gateway6}) {
		t.Errorf("default routes after leaving n1: %v, want via %s and %s", got, n2.Gateway, n2.Gateway6)
	}
}

// A veth that refuses deletion must not make the reaper spin forever: it
// gives up after a bounded number of attempts with backoff and says which
// veth is left (a later reconcile or agent cycle tries again).
func TestFakeReaperGivesUpOnAStuckVeth(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	m.reap = func() {} // reap by hand below
	m.reapBackoff = time.Millisecond
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	fk.AddNetns("c1")
	ep := mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c1"})
	if err := m.Disconnect("n1", "c1"); err != nil {
		t.Fatal(err)
	}
	fk.RefuseDelete = map[string]bool{ep.HostVeth: true}
	done := make(chan error, 1)
	go func() { done <- m.Reap() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), ep.HostVeth) {
			t.Errorf("Reap() = %v, want an error naming %s", err, ep.HostVeth)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reaper is still spinning on a veth that refuses deletion")
	}
	deletes := 0
	for _, c := range fk.Calls() {
		if strings.HasPrefix(c, "DeleteLink "+ep.HostVeth) || strings.HasPrefix(c, "DeleteGroup") {
			deletes++
		}
	}
	if deletes == 0 || deletes > 2*reapAttempts {
		t.Errorf("%d deletion attempts, want 1..%d", deletes, 2*reapAttempts)
	}
	// Once the kernel lets go, the next reap finishes the job.
	fk.RefuseDelete = nil
	if err := m.Reap(); err != nil {
		t.Fatal(err)
	}
	if _, ok := fk.State().Links[ep.HostVeth]; ok {
		t.Error("veth still there")
	}
}

// Daemon.Run returns when its event socket fails instead of running on
// deaf, and its goroutines end with it.
func TestFakeDaemonRunReturnsServeError(t *testing.T) {
	fk := fakekernel.New()
	d, err := NewDaemon(Options{StateDir: t.TempDir(),
		Kernel: Kernel{Links: fk, Veths: fk, Sysctl: fk, Firewall: fk, Resolver: fk, Namespaces: fk}})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- d.Run(context.Background(), time.Hour) }()
	time.Sleep(50 * time.Millisecond)
	d.srv.Close()
	select {
	case err := <-ran:
		if err == nil || !strings.Contains(err.Error(), "event socket") {
			t.Errorf("Run() = %v, want the event socket's error", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run kept going after its event socket failed")
	}
}

// Best-effort kernel and state calls that used to drop their errors now
// log them, naming the object (there was no logger before).
func TestFakeBestEffortFailuresAreLogged(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fail  string // prefix of the call that fails
		setup func(t *testing.T, m *Manager, fk *fakekernel.Kernel)
		run   func(m *Manager) error
		want  string // in the log
	}{
		{"bridge not restored", "CreateBridge", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			n := mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
			if err := fk.DeleteLink(n.Bridge); err != nil {
				t.Fatal(err)
			}
		}, (*Manager).Reconcile, "bridge not restored"},
		{"resolver not updated on disconnect", "Resolver.", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
			fk.AddNetns("c1")
			mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c1"})
		}, func(m *Manager) error { return m.Disconnect("n1", "c1") }, "resolver file not updated"},
		{"dead owner's namespace not deleted", "Namespaces.Delete", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
			fk.AddNetns("run1")
			fk.AliveFn = func(int, uint64) bool { return true }
			mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "run1", Owner: &state.Owner{PID: 1, StartTime: 1}})
			fk.AliveFn = nil
		}, (*Manager).Reconcile, "namespace of a dead owner not deleted"},
		{"unplug of a dead owner's endpoint", "Unplug", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
			fk.AddNetns("run1")
			fk.AliveFn = func(int, uint64) bool { return true }
			mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "run1", Owner: &state.Owner{PID: 1, StartTime: 1}})
			fk.AliveFn = nil
		}, (*Manager).Reconcile, "unplug of a dead owner's endpoint failed"},
		{"stale pending veth not deleted", "DeleteLink nav", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
			host := vethName(newID())
			fk.AddLink(host, fakekernel.Link{Kind: "veth"})
			snap, _ := m.Snapshot()
			f := snap.Files["n1"]
			f.PendingDelete = []state.PendingVeth{{Name: host, Since: now(), Creating: true}}
			if err := m.store.Write(f); err != nil {
				t.Fatal(err)
			}
		}, (*Manager).Reconcile, "pending veth not deleted"},
		{"firewall not restored with a bridge", "Sync", func(t *testing.T, m *Manager, fk *fakekernel.Kernel) {
			n := mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
			if err := fk.DeleteLink(n.Bridge); err != nil {
				t.Fatal(err)
			}
		}, (*Manager).Reconcile, "firewall not restored"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, fk, logs := newFakeManager(t)
			m.reap = func() {}
			tc.setup(t, m, fk)
			fk.FailWhen(func(c string) bool { return strings.HasPrefix(c, tc.fail) })
			err := tc.run(m)
			fk.FailWhen(nil)
			if err != nil {
				t.Fatalf("a best-effort failure failed the operation: %v", err)
			}
			if out := logs.String(); !strings.Contains(out, tc.want) || !strings.Contains(out, "injected failure") {
				t.Errorf("log lacks %q and the error:\n%s", tc.want, out)
			}
		})
	}
}

// Disconnects that queue veths while a reaper works see it running and
// start none: the running reaper must take them all, however many passes
// that needs (it used to count passes, give up after reapAttempts of them
// and leave the latest veths pending with no reaper left to delete them).
func TestFakeReaperKeepsUpWithDisconnects(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	m.reapBackoff = time.Millisecond
	var reapers sync.WaitGroup
	m.reap = func() { // what spawnReaper does, in-process
		if !ReaperRunning(m.StateDir()) {
			reapers.Go(func() { m.Reap() })
		}
	}
	fk.FailWhen(func(call string) bool {
		if strings.HasPrefix(call, "DeleteLink") || strings.HasPrefix(call, "DeleteGroup") {
			time.Sleep(3 * time.Millisecond) // a grace period, so disconnects overlap
		}
		return false
	})
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.141.0/24"})
	const n = 4 * reapAttempts
	for i := range n {
		fk.AddNetns(fmt.Sprintf("c%d", i))
		mustConnect(t, m, ConnectSpec{Network: "n1", Netns: fmt.Sprintf("c%d", i)})
	}
	for i := range n {
		if err := m.Disconnect("n1", fmt.Sprintf("c%d", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // a CLI's start-up, at the pace of a script
	}
	reapers.Wait()
	snap, err := m.store.Load()
	if err != nil {
		t.Fatal(err)
	}
	if p := snap.Files["n1"].PendingDelete; len(p) != 0 {
		t.Errorf("%d of %d veths left pending with no reaper running: %v", len(p), n, p)
	}
	for name, l := range fk.State().Links {
		if l.Kind == "veth" {
			t.Errorf("veth %s left in the kernel", name)
		}
	}
}
