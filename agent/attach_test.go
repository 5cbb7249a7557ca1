package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/agent/internal/fakekernel"
	"github.com/netalias/netalias/cni"
	"github.com/netalias/netalias/state"
)

// Runtime attachments (the CNI plugin's backend) on the fake kernel.

func attachSpec(id, ifname, nsPath, name string) AttachSpec {
	return AttachSpec{Network: "n1", CNINetwork: "cninet", ContainerID: id, IfName: ifname, Netns: nsPath, Name: name}
}

func mustAttach(t *testing.T, m *Manager, spec AttachSpec) *Attached {
	t.Helper()
	a, err := m.Attach(spec)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func newAttachManager(t *testing.T) (*Manager, *fakekernel.Kernel) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24", Subnet6: "fd00:201:140::/64"})
	return m, fk
}

func TestFakeAttachRollsBackAtEveryStep(t *testing.T) {
	m, fk := newAttachManager(t)
	c0 := fk.AddNetns("c0")
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c0"})
	mustAttach(t, m, attachSpec("aaaa", "eth1", c0, "zero"))
	c1 := fk.AddNetns("c1")
	var a *Attached
	calls := failEveryStep(t, m, fk, func() (err error) {
		spec := attachSpec("bbbb", "net1", c1, "web")
		spec.Aliases = []string{"api"}
		a, err = m.Attach(spec)
		return err
	}, nil)
	want := []string{"WriteIntent n1", "Attach nav", "Write n1"}
	if len(calls) != len(want) {
		t.Fatalf("steps %q, want %q (no resolver file for runtime attachments)", calls, want)
	}
	for i := range want {
		if !strings.HasPrefix(calls[i], want[i]) {
			t.Errorf("step %d is %q, want %q…", i, calls[i], want[i])
		}
	}
	ep := a.Endpoint
	if ep.IfName != "net1" || ep.Attachment == nil || *ep.Attachment != (state.Attachment{Runtime: state.RuntimeCNI, ID: "bbbb", Network: "cninet"}) ||
		!slices.Equal(ep.Aliases, []string{"api"}) || !a.DefaultRoute {
		t.Errorf("attached %+v (attachment %+v)", a, ep.Attachment)
	}
	st := fk.State()
	in := st.Netns[c1]["net1"]
	if len(in.Addrs) != 2 || len(in.Routes) != 2 || in.HostPeer != ep.HostVeth {
		t.Errorf("c1's net1: %+v (want two addresses and both default routes)", in)
	}
	if _, ok := st.Resolv["c1"]; ok {
		t.Error("a resolver file was written for a runtime attachment")
	}
	if lease := fileOf(t, m, "n1").Leases["web"]; lease.IPv4 != ep.IPv4 {
		t.Errorf("lease %+v, endpoint %s", lease, ep.IPv4)
	}
}

func fileOf(t *testing.T, m *Manager, name string) *state.File {
	t.Helper()
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return snap.Files[name]
}

// What an ADD must refuse, changing nothing.
func TestFakeAttachRefusals(t *testing.T) {
	m, fk := newAttachManager(t)
	c1 := fk.AddNetns("c1")
	first := mustAttach(t, m, attachSpec("aaaa", "eth0", c1, "web"))
	c2 := fk.AddNetns("c2")
	fk.SetIface(c2, "eth0", fakekernel.Iface{Up: true, MAC: "02:00:00:00:00:01"})
	for _, tc := range []struct {
		name string
		spec AttachSpec
		want error
	}{
		{"same key", attachSpec("aaaa", "eth0", c1, "other"), ErrAttachmentExists},
		{"interface name taken in the namespace", attachSpec("cccc", "eth0", c2, "db"), ErrAttachmentExists},
		{"endpoint name taken", attachSpec("cccc", "eth1", c2, "web"), ErrNameTaken},
		{"static address taken", func() AttachSpec { s := attachSpec("cccc", "eth1", c2, "db"); s.IPv4 = first.Endpoint.IPv4; return s }(), ErrAddressTaken},
		{"static address is the gateway", func() AttachSpec {
			s := attachSpec("cccc", "eth1", c2, "db")
			s.IPv4 = netip.MustParseAddr("10.201.140.1")
			return s
		}(), ErrAddressTaken},
		{"static address outside the subnet", func() AttachSpec {
			s := attachSpec("cccc", "eth1", c2, "db")
			s.IPv4 = netip.MustParseAddr("10.9.9.9")
			return s
		}(), ErrBadRequest},
		{"namespace gone", attachSpec("cccc", "eth0", "/run/netns/nope", "db"), ErrBadNetns},
		{"unknown network", func() AttachSpec { s := attachSpec("cccc", "eth1", c2, "db"); s.Network = "nope"; return s }(), ErrNotFound},
		{"bad name", attachSpec("cccc", "eth1", c2, "bad_name"), ErrBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := capture(t, m, fk)
			_, err := m.Attach(tc.spec)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if d := before.diff(capture(t, m, fk)); d != "" {
				t.Errorf("a refused attach changed things:\n%s", d)
			}
		})
	}
}

// A second ADD into the same namespace under another interface name is
// legal; it gets no second default route. Static addresses and MAC are
// honoured; addresses are sticky by name.
func TestFakeAttachSecondInterfaceStaticAndSticky(t *testing.T) {
	m, fk := newAttachManager(t)
	c1 := fk.AddNetns("c1")
	mustAttach(t, m, attachSpec("aaaa", "eth0", c1, "web"))
	spec := attachSpec("aaaa", "eth1", c1, "web-2")
	spec.IPv4 = netip.MustParseAddr("10.201.140.77")
	spec.MAC = net.HardwareAddr{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	a := mustAttach(t, m, spec)
	if a.DefaultRoute || a.Endpoint.IPv4 != spec.IPv4 || a.Endpoint.MAC != "02:aa:bb:cc:dd:ee" {
		t.Errorf("second attachment %+v", a)
	}
	in := fk.State().Netns[c1]["eth1"]
	if in.MAC != "02:aa:bb:cc:dd:ee" || len(in.Routes) != 0 {
		t.Errorf("eth1 in c1: %+v", in)
	}
	web := fileOf(t, m, "n1").Endpoints[0]
	if err := m.Detach("n1", "aaaa", "eth0"); err != nil {
		t.Fatal(err)
	}
	c2 := fk.AddNetns("c2")
	if again := mustAttach(t, m, attachSpec("dddd", "eth0", c2, "web")); again.Endpoint.IPv4 != web.IPv4 || again.Endpoint.IPv6 != web.IPv6 {
		t.Errorf("web came back with %s/%s, had %s/%s", again.Endpoint.IPv4, again.Endpoint.IPv6, web.IPv4, web.IPv6)
	}
}

func TestFakeDetach(t *testing.T) {
	m, fk := newAttachManager(t)
	clean := fk.State()
	c1 := fk.AddNetns("c1")
	mustAttach(t, m, attachSpec("aaaa", "eth0", c1, "web"))
	for i := range 2 {
		if err := m.Detach("n1", "aaaa", "eth0"); err != nil {
			t.Fatalf("detach #%d: %v", i+1, err)
		}
	}
	if f := fileOf(t, m, "n1"); len(f.Endpoints) != 0 || len(f.PendingDelete) != 0 {
		t.Errorf("n1 after detach: %+v", f)
	}
	st := fk.State()
	for name, l := range st.Links {
		if l.Kind == "veth" {
			t.Errorf("veth %s left", name)
		}
	}
	if len(st.Resolv) != 0 || !slices.Equal(keys(st.Links), keys(clean.Links)) {
		t.Errorf("kernel after detach: %+v", st)
	}
	if err := m.Detach("n1", "never", "eth0"); err != nil {
		t.Errorf("detach of an ID never added: %v", err)
	}
	// The namespace vanished before DEL.
	c2 := fk.AddNetns("c2")
	mustAttach(t, m, attachSpec("bbbb", "eth0", c2, "db"))
	fk.RemoveNetns(c2)
	if err := m.Detach("n1", "bbbb", "eth0"); err != nil {
		t.Errorf("detach after the namespace vanished: %v", err)
	}
	if n := len(fileOf(t, m, "n1").Endpoints); n != 0 {
		t.Errorf("%d endpoints left", n)
	}
	if err := m.Detach("nope", "bbbb", "eth0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("detach on an unknown network: %v, want ErrNotFound", err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// CHECK names what is missing.
func TestFakeCheckAttachment(t *testing.T) {
	m, fk := newAttachManager(t)
	c1 := fk.AddNetns("c1")
	a := mustAttach(t, m, attachSpec("aaaa", "eth0", c1, "web"))
	if _, err := m.CheckAttachment("n1", "aaaa", "eth0"); err != nil {
		t.Fatalf("check of a whole attachment: %v", err)
	}
	if _, err := m.CheckAttachment("n1", "zzzz", "eth0"); !errors.Is(err, ErrNotAttached) {
		t.Errorf("check of an unknown attachment: %v", err)
	}
	whole := fk.State()
	in := whole.Netns[c1]["eth0"]
	host := whole.Links[a.Endpoint.HostVeth]
	n := fileOf(t, m, "n1").Network
	for _, tc := range []struct {
		name, want string
		breakIt    func()
	}{
		{"address", "address " + a.Endpoint.IPv4.String() + "/24 is missing", func() {
			b := in
			b.Addrs = b.Addrs[1:]
			fk.SetIface(c1, "eth0", b)
		}},
		{"default route", "default route via 10.201.140.1 is missing", func() {
			b := in
			b.Routes = b.Routes[1:]
			fk.SetIface(c1, "eth0", b)
		}},
		{"host veth off the bridge", "is not on bridge " + n.Bridge, func() {
			b := host
			b.Master = ""
			fk.SetLink(a.Endpoint.HostVeth, b)
		}},
		{"firewall", "firewall rules of network \"n1\"", func() { fk.Sync(m.FirewallTable(), nil) }},
		{"host veth gone", "host veth " + a.Endpoint.HostVeth + " is gone", func() { fk.DeleteLink(a.Endpoint.HostVeth) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.breakIt()
			_, err := m.CheckAttachment("n1", "aaaa", "eth0")
			if !errors.Is(err, ErrAttachmentDamaged) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrAttachmentDamaged naming %q", err, tc.want)
			}
			if !errors.Is(cniError(err), cni.ErrDamaged) {
				t.Errorf("the backend does not report %v as cni.ErrDamaged", err)
			}
			// Repair for the next case.
			fk.SetLink(a.Endpoint.HostVeth, host)
			fk.SetIface(c1, "eth0", in)
			fk.Sync(m.FirewallTable(), whole.Tables[m.FirewallTable()])
		})
	}
}

// GC is scoped to the CNI network name and spares connect's endpoints.
func TestFakeGCAttachments(t *testing.T) {
	m, fk := newAttachManager(t)
	c0 := fk.AddNetns("c0")
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c0"})
	c1, c2, c3 := fk.AddNetns("c1"), fk.AddNetns("c2"), fk.AddNetns("c3")
	mustAttach(t, m, attachSpec("keep", "eth0", c1, "keep"))
	mustAttach(t, m, attachSpec("drop", "eth0", c2, "drop"))
	other := attachSpec("othr", "eth0", c3, "other")
	other.CNINetwork = "another"
	mustAttach(t, m, other)
	b := CNIBackend{m}
	if err := b.GC(context.Background(), "n1", "cninet", []cni.Key{{ContainerID: "keep", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, ep := range fileOf(t, m, "n1").Endpoints {
		left = append(left, ep.Name)
	}
	slices.Sort(left)
	if want := []string{"c0", "keep", "other"}; !slices.Equal(left, want) {
		t.Errorf("endpoints after GC %v, want %v", left, want)
	}
	if _, ok := fk.State().Netns[c2]["eth0"]; ok {
		t.Error("the collected attachment's interface is still in c2")
	}
	_ = c0
	if err := b.GC(context.Background(), "nope", "cninet", nil); !errors.Is(err, cni.ErrUnknownNetwork) {
		t.Errorf("GC of an unknown network: %v, want cni.ErrUnknownNetwork", err)
	}
}

func TestFakeAttachStatus(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	n := mustCreate(t, m, NetworkSpec{Name: "tiny", Subnet: "10.201.141.0/30"})
	b := CNIBackend{m}
	if err := b.Status(context.Background(), "tiny"); err != nil {
		t.Fatalf("status of a network with room: %v", err)
	}
	if err := b.Status(context.Background(), "nope"); !errors.Is(err, cni.ErrUnknownNetwork) {
		t.Errorf("status of an unknown network: %v", err)
	}
	c1 := fk.AddNetns("c1")
	spec := attachSpec("aaaa", "eth0", c1, "web")
	spec.Network = "tiny"
	mustAttach(t, m, spec)
	if err := b.Status(context.Background(), "tiny"); !errors.Is(err, cni.ErrNoFreeAddress) {
		t.Errorf("status of a full network: %v, want cni.ErrNoFreeAddress", err)
	}
	spec2 := attachSpec("bbbb", "eth0", fk.AddNetns("c2"), "db")
	spec2.Network = "tiny"
	if _, err := b.Add(context.Background(), cni.AddRequest{Network: "tiny", Key: cni.Key{ContainerID: "bbbb", IfName: "eth0"}, Netns: spec2.Netns, Name: "db"}); !errors.Is(err, cni.ErrNoFreeAddress) {
		t.Errorf("add to a full network: %v, want cni.ErrNoFreeAddress", err)
	}
	// The bridge is gone and cannot be restored; an endpoint is on it.
	fk.DeleteLink(n.Bridge)
	fk.FailWhen(func(c string) bool { return strings.HasPrefix(c, "CreateBridge") })
	defer fk.FailWhen(nil)
	if err := b.Status(context.Background(), "tiny"); !errors.Is(err, cni.ErrDegraded) || !strings.Contains(err.Error(), n.Bridge) {
		t.Errorf("status with the bridge gone: %v, want cni.ErrDegraded naming %s", err, n.Bridge)
	}
}

// A failed write of the state directory is ErrStateIO for the plugin
// (code 5), and the attach changes nothing else.
func TestFakeAttachStateIO(t *testing.T) {
	m, fk := newAttachManager(t)
	c1 := fk.AddNetns("c1")
	before := fk.State()
	m.files = noSpace{m.store, m.StateDir()}
	_, err := CNIBackend{m}.Add(context.Background(), cni.AddRequest{Network: "n1", Key: cni.Key{ContainerID: "aaaa", IfName: "eth0"}, Netns: c1, Name: "web"})
	if !errors.Is(err, cni.ErrStateIO) || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("add with a full disk: %v, want cni.ErrStateIO", err)
	}
	if d := (world{kernel: before}).diff(world{kernel: fk.State()}); d != "" {
		t.Errorf("a failed attach changed the kernel:\n%s", d)
	}
}

// noSpace fails durable writes as a full disk does.
type noSpace struct {
	stateFiles
	dir string
}

func (n noSpace) Write(f *state.File) error {
	return &fs.PathError{Op: "write", Path: state.NetworkPath(n.dir, f.Network.Name), Err: syscall.ENOSPC}
}

// Every agent error of attach.go reaches the plugin as its sentinel, with
// the agent's message unchanged.
func TestCNIErrorKinds(t *testing.T) {
	for _, k := range kinds {
		err := fmt.Errorf("network %q: %w", "n1", k.agent)
		got := cniError(err)
		if !errors.Is(got, k.cni) || got.Error() != err.Error() {
			t.Errorf("%v became %q (is %v: %v)", k.agent, got, k.cni, errors.Is(got, k.cni))
		}
	}
	if cniError(nil) != nil {
		t.Error("nil became an error")
	}
}

// A runtime that retries an ADD whose answer it never read (the plugin
// was killed after the commit) gets the attachment back, changing
// nothing; a damaged attachment, or another request under the same key,
// is still refused (one whose veth vanished is reclaimed first, and so
// made anew).
func TestFakeAttachRetriedAdd(t *testing.T) {
	m, fk := newAttachManager(t)
	c1 := fk.AddNetns("c1")
	spec := attachSpec("aaaa", "eth0", c1, "web")
	spec.Aliases = []string{"api"}
	first := mustAttach(t, m, spec)
	before := capture(t, m, fk)
	var heard []events.Event
	m.emit = func(ev events.Event) { heard = append(heard, ev) }
	again, err := m.Attach(spec)
	if err != nil {
		t.Fatalf("retried ADD: %v", err)
	}
	// The first ADD may have been killed before its event went out.
	if len(heard) != 1 || heard[0].Action != "connect" || heard[0].Endpoint != "web" || heard[0].IPv4 != first.Endpoint.IPv4.String() {
		t.Errorf("retried ADD sent events %+v, want one connect event for web at %s", heard, first.Endpoint.IPv4)
	}
	if again.Endpoint.IPv4 != first.Endpoint.IPv4 || again.Endpoint.IPv6 != first.Endpoint.IPv6 ||
		again.Endpoint.HostVeth != first.Endpoint.HostVeth || again.Endpoint.MAC != first.Endpoint.MAC {
		t.Errorf("retried ADD answered %+v, want the first one's %+v", again.Endpoint, first.Endpoint)
	}
	if d := before.diff(capture(t, m, fk)); d != "" {
		t.Errorf("a retried ADD changed things:\n%s", d)
	}
	other := spec
	other.Aliases = []string{"db"}
	if _, err := m.Attach(other); !errors.Is(err, ErrAttachmentExists) {
		t.Errorf("same key, other aliases: %v, want %v", err, ErrAttachmentExists)
	}
	// The container's address gone: CHECK's failure, and no retry's answer.
	in := fk.State().Netns[c1]["eth0"]
	in.Addrs = nil
	fk.SetIface(c1, "eth0", in)
	if _, err := m.Attach(spec); !errors.Is(err, ErrAttachmentExists) {
		t.Errorf("retried ADD of a damaged attachment: %v, want %v", err, ErrAttachmentExists)
	}
}

// A retried ADD whose first run fell back to the short ID (the pod name
// was taken) finds that attachment while the name is still taken; once
// the name is free, the short-ID attachment is no answer to it.
func TestFakeAttachRetriedAddUnderFallback(t *testing.T) {
	m, fk := newAttachManager(t)
	c0, c1 := fk.AddNetns("c0"), fk.AddNetns("c1")
	mustAttach(t, m, attachSpec("0000", "eth0", c0, "web"))          // holds "web"
	fell := mustAttach(t, m, attachSpec("aaaa", "eth0", c1, "aaaa")) // what the plugin's fallback made
	retry := attachSpec("aaaa", "eth0", c1, "web")
	retry.Fallback = "aaaa"
	before := capture(t, m, fk)
	got, err := m.Attach(retry)
	if err != nil || got.Endpoint.IPv4 != fell.Endpoint.IPv4 || got.Endpoint.Name != "aaaa" {
		t.Fatalf("retried ADD under the fallback = %+v, %v; want the attachment named aaaa at %s", got, err, fell.Endpoint.IPv4)
	}
	if d := before.diff(capture(t, m, fk)); d != "" {
		t.Errorf("a retried ADD changed things:\n%s", d)
	}
	if err := m.Detach("n1", "0000", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Attach(retry); !errors.Is(err, ErrAttachmentExists) {
		t.Errorf("with the name free: %v, want %v", err, ErrAttachmentExists)
	}
}
