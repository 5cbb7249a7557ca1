package agent

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/netalias/netalias/agent/internal/fakekernel"
	"github.com/netalias/netalias/state"
)

// The Docker driver's backend against the fake kernel, in dockerd's call
// order: RequestAddress → CreateEndpoint → Join … Leave → DeleteEndpoint
// → ReleaseAddress.

const (
	dockerEP1 = "1111111111111111111111111111111111111111111111111111111111111111"
	dockerEP2 = "2222222222222222222222222222222222222222222222222222222222222222"
	dockerNet = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
)

func newFakeDockerManager(t *testing.T) (*Manager, *fakekernel.Kernel) {
	t.Helper()
	m, fk, _ := newFakeManager(t)
	m.k.Pairs = fk
	mustCreate(t, m, NetworkSpec{Name: "dn", Subnet: "10.201.141.0/24", Subnet6: "fd00:201:141::/64"})
	return m, fk
}

func networkFile(t *testing.T, m *Manager, name string) *state.File {
	t.Helper()
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	f, ok := snap.Files[name]
	if !ok {
		t.Fatalf("network %q gone", name)
	}
	return f
}

// dockerUp runs dockerd's calls for one endpoint up to CreateEndpoint.
func dockerUp(t *testing.T, m *Manager, epID string, want netip.Addr) *state.Endpoint {
	t.Helper()
	a4, err := m.DockerReserve("dn", false, want)
	if err != nil {
		t.Fatal(err)
	}
	a6, err := m.DockerReserve("dn", true, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := m.DockerCreateEndpoint(DockerEndpointSpec{Network: "dn", EndpointID: epID, DockerNetwork: dockerNet, IPv4: a4, IPv6: a6})
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func TestFakeDockerEndpointLifecycle(t *testing.T) {
	m, fk := newFakeDockerManager(t)
	n := networkFile(t, m, "dn").Network
	ep := dockerUp(t, m, dockerEP1, netip.Addr{})
	if ep.IPv4 != netip.MustParseAddr("10.201.141.2") || !n.Subnet6.Contains(ep.IPv6) {
		t.Errorf("addresses %s %s, want the first free ones", ep.IPv4, ep.IPv6)
	}
	// Both ends on the host: the host end up on the bridge, the peer down.
	k := fk.State()
	host, peer := k.Links[ep.HostVeth], k.Links[dockerPeerName(ep.ID)]
	if host.Master != n.Bridge || !host.Up || peer.Kind != "veth" || peer.Up || peer.Master != "" {
		t.Errorf("host end %+v, peer %+v", host, peer)
	}
	// Recorded nameless with Docker's IDs; the reservations became it.
	f := networkFile(t, m, "dn")
	if len(f.Endpoints) != 1 || f.Endpoints[0].Name != "" || f.Endpoints[0].Attachment.ID != dockerEP1 ||
		f.Endpoints[0].Attachment.Network != dockerNet || len(f.PendingDelete) != 0 {
		t.Fatalf("state after CreateEndpoint: %+v", f)
	}

	// Between CreateEndpoint and Join the namespace is unknown: a
	// reconcile keeps the endpoint.
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if f := networkFile(t, m, "dn"); len(f.Endpoints) != 1 || f.Endpoints[0].HostVeth != ep.HostVeth {
		t.Fatalf("reconcile before Join changed the endpoint: %+v", f.Endpoints)
	}
	peerName, err := m.DockerJoin("dn", dockerEP1, "/var/run/docker/netns/abc")
	if err != nil || peerName != dockerPeerName(ep.ID) {
		t.Fatalf("Join = %q, %v", peerName, err)
	}
	if f := networkFile(t, m, "dn"); f.Endpoints[0].Netns != "/var/run/docker/netns/abc" {
		t.Errorf("Join did not record the sandbox: %+v", f.Endpoints[0])
	}

	// A connect on the same network never gets a Docker address, and
	// cannot ask for one.
	fk.AddNetns("c1")
	if _, err := m.Connect(ConnectSpec{Network: "dn", Netns: "c1", IP: ep.IPv4.String()}); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("connect --ip of a Docker address: %v", err)
	}
	c := mustConnect(t, m, ConnectSpec{Network: "dn", Netns: "c1"})
	if c.IPv4 == ep.IPv4 || c.IPv6 == ep.IPv6 {
		t.Errorf("connect got a Docker endpoint's address: %s %s", c.IPv4, c.IPv6)
	}
	// And Docker never gets the connect's.
	if _, err := m.DockerReserve("dn", false, c.IPv4); err == nil {
		t.Errorf("DockerReserve handed out connect's %s", c.IPv4)
	}

	// A late ReleaseAddress of a live endpoint's address frees nothing.
	if err := m.DockerRelease("dn", ep.IPv4); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DockerReserve("dn", false, ep.IPv4); err == nil {
		t.Errorf("a live endpoint's address was released")
	}

	if err := m.DockerLeave("dn", dockerEP1); err != nil {
		t.Fatal(err)
	}
	if err := m.DockerDeleteEndpoint("dn", dockerEP1); err != nil {
		t.Fatal(err)
	}
	// No veth (the reaper ran), the addresses still reserved until
	// ReleaseAddress.
	if _, ok := fk.State().Links[ep.HostVeth]; ok {
		t.Errorf("veth %s left after DeleteEndpoint", ep.HostVeth)
	}
	if _, ok := fk.State().Links[dockerPeerName(ep.ID)]; ok {
		t.Errorf("peer left after DeleteEndpoint")
	}
	if _, err := m.DockerReserve("dn", false, ep.IPv4); err == nil {
		t.Errorf("%s reusable before ReleaseAddress", ep.IPv4)
	}
	// Removals are idempotent.
	for _, err := range []error{m.DockerDeleteEndpoint("dn", dockerEP1), m.DockerLeave("dn", dockerEP1)} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("second removal: %v, want ErrNotFound", err)
		}
	}
	for _, a := range []netip.Addr{ep.IPv4, ep.IPv6, ep.IPv4} {
		if err := m.DockerRelease("dn", a); err != nil {
			t.Fatal(err)
		}
	}
	f = networkFile(t, m, "dn")
	if len(f.Endpoints) != 1 || f.Endpoints[0].Name != "c1" || len(f.PendingDelete) != 0 {
		t.Errorf("after release: endpoints %+v, pending %+v (want only c1)", f.Endpoints, f.PendingDelete)
	}
	if a, err := m.DockerReserve("dn", false, ep.IPv4); err != nil || a != ep.IPv4 {
		t.Errorf("released %s not reusable: %s %v", ep.IPv4, a, err)
	}
}

func TestFakeDockerReserveRefuses(t *testing.T) {
	m, _ := newFakeDockerManager(t)
	m.CreateNetwork(NetworkSpec{Name: "v4only", Subnet: "10.201.142.0/24"})
	for _, tc := range []struct {
		network string
		v6      bool
		want    string
		err     string
	}{
		{"dn", false, "10.201.141.1", "is the gateway of network \"dn\""},
		{"dn", false, "10.201.99.5", "not inside subnet"},
		{"v4only", true, "", "network \"v4only\" has no IPv6 subnet"},
		{"nope", false, "", "network \"nope\" not found"},
	} {
		var want netip.Addr
		if tc.want != "" {
			want = netip.MustParseAddr(tc.want)
		}
		before := networkFile(t, m, "dn")
		if _, err := m.DockerReserve(tc.network, tc.v6, want); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("DockerReserve(%s, %v, %s) = %v, want %q", tc.network, tc.v6, tc.want, err, tc.err)
		}
		if after := networkFile(t, m, "dn"); len(after.Endpoints) != len(before.Endpoints) {
			t.Errorf("a refused reservation changed the state")
		}
	}
}

func TestFakeDockerCreateEndpointRollsBackAtEveryStep(t *testing.T) {
	m, fk := newFakeDockerManager(t)
	dockerUp(t, m, dockerEP1, netip.Addr{})
	a4, _ := m.DockerReserve("dn", false, netip.Addr{})
	a6, _ := m.DockerReserve("dn", true, netip.Addr{})
	calls := failEveryStep(t, m, fk, func() error {
		_, err := m.DockerCreateEndpoint(DockerEndpointSpec{Network: "dn", EndpointID: dockerEP2, DockerNetwork: dockerNet, IPv4: a4, IPv6: a6})
		return err
	}, nil)
	want := []string{"WriteIntent dn", "CreatePair nav", "Write dn"}
	if len(calls) != len(want) {
		t.Fatalf("steps %q, want %q", calls, want)
	}
	for i := range want {
		if !strings.HasPrefix(calls[i], want[i]) {
			t.Errorf("step %d is %q, want %q…", i, calls[i], want[i])
		}
	}
	f := networkFile(t, m, "dn")
	if len(f.Endpoints) != 2 || len(f.PendingDelete) != 0 {
		t.Errorf("after the successful create: %+v", f)
	}
}

func TestFakeDockerReserveAndJoinRollBack(t *testing.T) {
	m, fk := newFakeDockerManager(t)
	dockerUp(t, m, dockerEP1, netip.Addr{})
	failEveryStep(t, m, fk, func() error {
		_, err := m.DockerReserve("dn", false, netip.Addr{})
		return err
	}, nil)
	failEveryStep(t, m, fk, func() error {
		_, err := m.DockerJoin("dn", dockerEP1, "/var/run/docker/netns/x")
		return err
	}, nil)
	failEveryStep(t, m, fk, func() error { return m.DockerLeave("dn", dockerEP1) }, nil)
	a, err := m.DockerReserve("dn", false, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	failEveryStep(t, m, fk, func() error { return m.DockerRelease("dn", a) }, nil)
}

func TestFakeDockerDeleteEndpointFailures(t *testing.T) {
	m, fk := newFakeDockerManager(t)
	ep := dockerUp(t, m, dockerEP1, netip.Addr{})
	failEveryStep(t, m, fk, func() error { return m.DockerDeleteEndpoint("dn", dockerEP1) },
		func(t *testing.T, n int, call string, before world) {
			after := capture(t, m, fk)
			if n == 1 { // the commit: nothing changed
				if d := before.diff(after); d != "" {
					t.Errorf("a failed commit changed things:\n%s", d)
				}
				return
			}
			// After the commit: the endpoint is gone from the state
			// whatever fails, and the veth is deleted or pending.
			f := networkFile(t, m, "dn")
			if findDocker(f, dockerEP1) >= 0 {
				t.Errorf("endpoint still recorded after %q failed", call)
			}
			_, exists := after.kernel.Links[ep.HostVeth]
			pending := len(f.PendingDelete) > 0
			if exists && !pending {
				t.Errorf("veth %s exists and is not pending deletion after %q failed", ep.HostVeth, call)
			}
			if l := after.kernel.Links[ep.HostVeth]; exists && l.Master != "" && l.Up {
				t.Errorf("veth %s still up on the bridge after %q failed", ep.HostVeth, call)
			}
			// Put it back for the next round.
			if err := m.Reconcile(); err != nil {
				t.Fatal(err)
			}
			m.DockerRelease("dn", ep.IPv4)
			m.DockerRelease("dn", ep.IPv6)
			m.Reap()
			dockerUp(t, m, dockerEP1, ep.IPv4)
		})
}

func TestFakeDockerReconcileDemotesVanishedVeth(t *testing.T) {
	m, fk := newFakeDockerManager(t)
	ep := dockerUp(t, m, dockerEP1, netip.Addr{})
	sandbox := fk.AddNetns("dockersandbox")
	if _, err := m.DockerJoin("dn", dockerEP1, sandbox); err != nil {
		t.Fatal(err)
	}
	if err := fk.MovePeer(dockerPeerName(ep.ID), sandbox, "eth0"); err != nil {
		t.Fatal(err)
	}
	// The container dies: its namespace takes the pair.
	fk.RemoveNetns(sandbox)
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	f := networkFile(t, m, "dn")
	if len(f.Endpoints) != 1 || !isReservation(f.Endpoints[0]) || f.Endpoints[0].IPv4 != ep.IPv4 {
		t.Fatalf("after the veth vanished: %+v, want a reservation of %s", f.Endpoints, ep.IPv4)
	}
	// A new endpoint does not get the address until Docker releases it.
	if _, err := m.DockerReserve("dn", false, ep.IPv4); err == nil {
		t.Errorf("the address of a vanished endpoint was handed out before ReleaseAddress")
	}
	if err := m.DockerDeleteEndpoint("dn", dockerEP1); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteEndpoint of a vanished endpoint: %v, want ErrNotFound", err)
	}
	m.DockerRelease("dn", ep.IPv4)
	m.DockerRelease("dn", ep.IPv6)
	if f := networkFile(t, m, "dn"); len(f.Endpoints) != 0 {
		t.Errorf("records left: %+v", f.Endpoints)
	}
}

func TestFakeDockerRemoveNetwork(t *testing.T) {
	m, fk := newFakeDockerManager(t)
	ep := dockerUp(t, m, dockerEP1, netip.Addr{})
	fk.AddNetns("c1")
	mustConnect(t, m, ConnectSpec{Network: "dn", Netns: "c1"})
	before := capture(t, m, fk)
	if err := m.DockerRemoveNetwork("dn"); err == nil || !strings.Contains(err.Error(), "not Docker's") || !strings.Contains(err.Error(), "c1") {
		t.Errorf("remove with a connect member: %v", err)
	}
	if d := before.diff(capture(t, m, fk)); d != "" {
		t.Errorf("a refused remove changed things:\n%s", d)
	}
	if err := m.Disconnect("dn", "c1"); err != nil {
		t.Fatal(err)
	}
	failEveryStep(t, m, fk, func() error { return m.DockerRemoveNetwork("dn") },
		func(t *testing.T, n int, call string, before world) {
			// The file stays until the last step; a failure before it
			// leaves the network usable (the pending-veths step is
			// irreversible: the reconcile then demotes the endpoint).
			if _, err := m.DockerNetwork("dn"); err != nil {
				t.Errorf("network gone after %q failed: %v", call, err)
			}
			if _, ok := capture(t, m, fk).kernel.Links[networkFile(t, m, "dn").Network.Bridge]; !ok {
				t.Errorf("bridge gone after %q failed", call)
			}
		})
	if _, err := m.DockerNetwork("dn"); !errors.Is(err, ErrNotFound) {
		t.Errorf("network after remove: %v", err)
	}
	k := fk.State()
	for _, l := range []string{ep.HostVeth, dockerPeerName(ep.ID)} {
		if _, ok := k.Links[l]; ok {
			t.Errorf("%s left after the network's removal", l)
		}
	}
	if err := m.DockerRemoveNetwork("dn"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v, want ErrNotFound", err)
	}
}

func TestFakeDockerCollect(t *testing.T) {
	m, fk := newFakeDockerManager(t)
	ep1 := dockerUp(t, m, dockerEP1, netip.Addr{})
	dockerUp(t, m, dockerEP2, netip.Addr{})
	res, err := m.DockerReserve("dn", false, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	// Docker knows endpoint 2 only; the reservation is young (kept).
	n, err := m.DockerCollect("dn", func(ep state.Endpoint) bool {
		return ep.HostVeth != "" && ep.Attachment.ID != dockerEP2
	})
	if err != nil || n != 1 {
		t.Fatalf("collect = %d, %v; want 1", n, err)
	}
	f := networkFile(t, m, "dn")
	if len(f.Endpoints) != 2 || f.Endpoints[0].Attachment.ID != dockerEP2 || f.Endpoints[1].IPv4 != res {
		t.Errorf("after collect: %+v", f.Endpoints)
	}
	if _, ok := fk.State().Links[ep1.HostVeth]; ok {
		t.Errorf("leaked endpoint's veth left")
	}
	if _, err := m.DockerReserve("dn", false, ep1.IPv4); err != nil {
		t.Errorf("leaked endpoint's address not freed: %v", err)
	}
}

// `netalias network rm` names Docker's nameless records, and --force
// removes them with the network.
func TestFakeNetworkRmWithDockerRecords(t *testing.T) {
	m, fk := newFakeDockerManager(t)
	ep := dockerUp(t, m, dockerEP1, netip.Addr{})
	res, _ := m.DockerReserve("dn", false, netip.Addr{})
	err := m.RemoveNetwork("dn", false)
	if err == nil || !strings.Contains(err.Error(), "docker endpoint "+dockerEP1[:12]) || !strings.Contains(err.Error(), "docker reservation "+res.String()) {
		t.Errorf("network rm with Docker records: %v", err)
	}
	if err := m.RemoveNetwork("dn", true); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DockerNetwork("dn"); !errors.Is(err, ErrNotFound) {
		t.Errorf("network after rm --force: %v", err)
	}
	if _, ok := fk.State().Links[ep.HostVeth]; ok {
		t.Errorf("Docker endpoint's veth left after rm --force")
	}
}

// dockerd calls the driver concurrently: reservations made at once from
// many goroutines (each holding the state lock in turn) never collide.
func TestFakeDockerConcurrentReservations(t *testing.T) {
	m, _ := newFakeDockerManager(t)
	const n = 16
	got := make(chan netip.Addr, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			a, err := m.DockerReserve("dn", false, netip.Addr{})
			got <- a
			errs <- err
		}()
	}
	seen := map[netip.Addr]bool{}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		a := <-got
		if seen[a] {
			t.Errorf("%s handed out twice", a)
		}
		seen[a] = true
	}
	if f := networkFile(t, m, "dn"); len(f.Endpoints) != n {
		t.Errorf("%d reservations recorded, want %d", len(f.Endpoints), n)
	}
}

// Docker releases a failed CreateEndpoint's addresses and sends no
// DeleteEndpoint: a release of the address of an endpoint in no sandbox
// removes the endpoint (its veth goes to the reaper) and frees the
// address; a joined endpoint's address stays. A CreateEndpoint repeated
// with the same ID and addresses gets the endpoint back.
func TestFakeDockerReleaseOfUnjoinedEndpoint(t *testing.T) {
	m, fk := newFakeDockerManager(t)
	m.reap = func() {}
	ep := dockerUp(t, m, dockerEP1, netip.Addr{})
	again, err := m.DockerCreateEndpoint(DockerEndpointSpec{Network: "dn", EndpointID: dockerEP1, DockerNetwork: dockerNet, IPv4: ep.IPv4, IPv6: ep.IPv6})
	if err != nil || again.HostVeth != ep.HostVeth {
		t.Fatalf("repeated CreateEndpoint = %+v, %v; want the endpoint with veth %s", again, err, ep.HostVeth)
	}
	if _, err := m.DockerCreateEndpoint(DockerEndpointSpec{Network: "dn", EndpointID: dockerEP1, DockerNetwork: dockerNet, IPv4: ep.IPv4.Next(), IPv6: ep.IPv6}); err == nil {
		t.Error("CreateEndpoint with the same ID and another address: no error")
	}
	joined := dockerUp(t, m, dockerEP2, netip.Addr{})
	if _, err := m.DockerJoin("dn", dockerEP2, "/var/run/docker/netns/abc"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{ep.IPv4, ep.IPv6, joined.IPv4} {
		if err := m.DockerRelease("dn", a); err != nil {
			t.Fatalf("release %s: %v", a, err)
		}
	}
	f := networkFile(t, m, "dn")
	if len(f.Endpoints) != 1 || f.Endpoints[0].Attachment.ID != dockerEP2 {
		t.Errorf("endpoints after the releases: %+v; want only the joined one", f.Endpoints)
	}
	if len(f.PendingDelete) != 1 || f.PendingDelete[0].Name != ep.HostVeth {
		t.Errorf("pending deletion %+v, want %s", f.PendingDelete, ep.HostVeth)
	}
	if l, ok := fk.State().Links[ep.HostVeth]; ok && l.Master != "" {
		t.Errorf("released endpoint's veth still on bridge %s", l.Master)
	}
	if a, err := m.DockerReserve("dn", false, ep.IPv4); err != nil || a != ep.IPv4 {
		t.Errorf("reserve the released %s: %s, %v", ep.IPv4, a, err)
	}
}
