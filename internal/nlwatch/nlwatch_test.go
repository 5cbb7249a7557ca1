package nlwatch

import (
	"context"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netalias/netalias/internal/testenv"
)

// throwawayNS makes an unnamed network namespace that vanishes, with
// everything in it, when the test ends.
func throwawayNS(t *testing.T) netns.NsHandle {
	t.Helper()
	testenv.RequireRoot(t)
	type res struct {
		ns  netns.NsHandle
		err error
	}
	c := make(chan res)
	go func() {
		// netns.New moves this thread; if it cannot come back, the thread
		// stays locked and dies with the goroutine.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			c <- res{err: err}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			c <- res{err: err}
			return
		}
		if err := netns.Set(orig); err != nil {
			c <- res{ns: ns}
			return
		}
		runtime.UnlockOSThread()
		c <- res{ns: ns}
	}()
	r := <-c
	if r.err != nil {
		t.Fatalf("new network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	return r.ns
}

// recorder keeps what a watcher reported. deaf drops events (not syncs),
// standing in for events lost in a burst.
type recorder struct {
	mu    sync.Mutex
	set   map[string]bool
	syncs int
	deaf  bool
}

func (r *recorder) sync(names []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set = map[string]bool{}
	for _, n := range names {
		r.set[n] = true
	}
	r.syncs++
}

func (r *recorder) event(name string, add bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deaf {
		return
	}
	if add {
		r.set[name] = true
	} else {
		delete(r.set, name)
	}
}

func (r *recorder) has(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.set[name]
}

func (r *recorder) syncCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.syncs
}

func (r *recorder) setDeaf(d bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deaf = d
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func addVeth(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("veth %s: %v", name, err)
	}
	return l
}

func TestLinksInNamespace(t *testing.T) {
	ns := throwawayNS(t)
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	var errs sync.Map
	w := New(&ns, func(err error) { errs.Store(err.Error(), true); t.Log(err) })
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Links(ctx, func(links []netlink.Link) {
			var names []string
			for _, l := range links {
				names = append(names, l.Attrs().Name)
			}
			rec.sync(names)
		}, func(u netlink.LinkUpdate) {
			rec.event(u.Attrs().Name, u.Header.Type == unix.RTM_NEWLINK)
		})
	}()
	defer func() { cancel(); <-done }()

	eventually(t, "first listing holds lo", func() bool { return rec.has("lo") })
	if rec.has("eth0") || rec.has("docker0") {
		t.Fatal("the listing shows the host's links, not the namespace's")
	}
	l := addVeth(t, h, "nwt0")
	eventually(t, "created veth seen", func() bool { return rec.has("nwt0") && rec.has("nwt0p") })
	if err := h.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted veth gone", func() bool { return !rec.has("nwt0") && !rec.has("nwt0p") })

	// Events lost (deaf), then a forced resubscription: the new listing
	// brings the missed link.
	rec.setDeaf(true)
	addVeth(t, h, "nwt1")
	time.Sleep(50 * time.Millisecond)
	if rec.has("nwt1") {
		t.Fatal("deaf recorder heard an event")
	}
	rec.setDeaf(false)
	before := rec.syncCount()
	w.Resubscribe()
	eventually(t, "resync after a forced resubscription", func() bool { return rec.syncCount() > before && rec.has("nwt1") })
	if _, ok := errs.Load("link subscription: " + ErrResubscribe.Error()); !ok {
		t.Error("the forced resubscription was not reported")
	}
	// Events flow again on the new subscription.
	addVeth(t, h, "nwt2")
	eventually(t, "events after the resubscription", func() bool { return rec.has("nwt2") })
}

func TestAddrsInNamespace(t *testing.T) {
	ns := throwawayNS(t)
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil { // a new namespace's lo is down, without 127.0.0.1
		t.Fatal(err)
	}
	l := addVeth(t, h, "nwa0")
	w := New(&ns, func(err error) { t.Log(err) })
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Addrs(ctx, func(addrs []netlink.Addr) {
			var ips []string
			for _, a := range addrs {
				ips = append(ips, a.IP.String())
			}
			rec.sync(ips)
		}, func(u netlink.AddrUpdate) {
			rec.event(u.LinkAddress.IP.String(), u.NewAddr)
		})
	}()
	defer func() { cancel(); <-done }()
	eventually(t, "first listing holds 127.0.0.1", func() bool { return rec.has("127.0.0.1") })

	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.202.9.7").To4(), Mask: net.CIDRMask(24, 32)}}
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, "added address seen", func() bool { return rec.has("10.202.9.7") })
	if err := h.AddrDel(l, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted address gone", func() bool { return !rec.has("10.202.9.7") })

	rec.setDeaf(true)
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	rec.setDeaf(false)
	w.Resubscribe()
	eventually(t, "resync brings the missed address", func() bool { return rec.has("10.202.9.7") })
}
