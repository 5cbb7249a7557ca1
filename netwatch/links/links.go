// Package links feeds a netwatch store from the host's network namespace
// through netlink: links (an endpoint whose host-side veth vanishes loses
// its records at once, before the agent reconciles) and addresses (a query
// from any local address comes from "the host"). It is apart from netwatch
// so that the pure store does not pull in netlink.
package links

import (
	"context"
	"errors"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netalias/netalias/internal/nlwatch"
	"github.com/netalias/netalias/netwatch"
)

// Sink receives the host's links and addresses; *netwatch.Store is one.
type Sink interface {
	// SyncLinks sets the complete set of host links (after a
	// (re)subscription).
	SyncLinks(present map[string]struct{})
	LinkAdded(name string)
	LinkRemoved(name string)
	// SetHostAddrs sets the host's own addresses. The map is the sink's.
	SetHostAddrs(addrs map[netip.Addr]struct{})
}

var _ Sink = (*netwatch.Store)(nil)

// Watcher follows the host's links and addresses into a Sink.
type Watcher struct {
	sink Sink
	log  netwatch.Logger
	nl   *nlwatch.Watcher
}

// New returns a watcher feeding sink; log (nil: netwatch.StdLogger) hears
// lost subscriptions.
func New(sink Sink, log netwatch.Logger) *Watcher {
	if log == nil {
		log = netwatch.StdLogger
	}
	w := &Watcher{sink: sink, log: log}
	w.nl = nlwatch.New(nil, func(err error) {
		if !errors.Is(err, nlwatch.ErrResubscribe) {
			log.Warningf("%v; resubscribing", err)
		}
	})
	return w
}

// Exists reports whether the host has a link called name. It is the
// store's LinkExists hook (netwatch.StoreOptions).
func Exists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

// Run follows links and addresses until ctx is done, resubscribing (and
// resyncing) after any subscription error, such as ENOBUFS under a burst.
func (w *Watcher) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.runAddrs(ctx)
	}()
	w.nl.Links(ctx, func(links []netlink.Link) {
		present := make(map[string]struct{}, len(links))
		for _, l := range links {
			present[l.Attrs().Name] = struct{}{}
		}
		w.sink.SyncLinks(present)
	}, func(u netlink.LinkUpdate) {
		switch u.Header.Type {
		case unix.RTM_DELLINK:
			w.sink.LinkRemoved(u.Attrs().Name)
		case unix.RTM_NEWLINK:
			w.sink.LinkAdded(u.Attrs().Name)
		}
	})
	<-done
	return nil
}

func (w *Watcher) runAddrs(ctx context.Context) {
	var local map[netip.Addr]struct{}
	// Publish a copy each time: readers hold the previous map lock-free.
	publish := func() {
		cp := make(map[netip.Addr]struct{}, len(local))
		for k := range local {
			cp[k] = struct{}{}
		}
		w.sink.SetHostAddrs(cp)
	}
	w.nl.Addrs(ctx, func(addrs []netlink.Addr) {
		local = make(map[netip.Addr]struct{}, len(addrs))
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				local[ip.Unmap()] = struct{}{}
			}
		}
		publish()
	}, func(u netlink.AddrUpdate) {
		a, ok := netip.AddrFromSlice(u.LinkAddress.IP)
		if !ok {
			return
		}
		if a = a.Unmap(); u.NewAddr {
			local[a] = struct{}{}
		} else {
			delete(local, a)
		}
		publish()
	})
}
