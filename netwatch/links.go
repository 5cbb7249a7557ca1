package netwatch

import (
	"context"
	"errors"
	"log"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Links watches the host's network namespace through netlink: links (an
// endpoint whose host-side veth vanishes loses its records at once, before
// the agent reconciles) and addresses (a query from any local address comes
// from "the host").
type Links struct {
	Store *Store
	Logf  func(format string, args ...any)
}

// NewLinks returns a watcher feeding st.
func NewLinks(st *Store) *Links {
	st.LinkExists = linkExists
	return &Links{Store: st, Logf: log.Printf}
}

func linkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

// Run follows links and addresses until ctx is done, resubscribing (and
// resyncing) after any subscription error, such as ENOBUFS under a burst.
func (l *Links) Run(ctx context.Context) error {
	go l.runAddrs(ctx)
	for ctx.Err() == nil {
		err := l.links(ctx)
		if ctx.Err() != nil {
			break
		}
		l.Logf("[WARNING] plugin/netalias: link subscription: %v; resubscribing", err)
		sleep(ctx, 100*time.Millisecond)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (l *Links) links(ctx context.Context) error {
	ch := make(chan netlink.LinkUpdate, 1024)
	done := make(chan struct{})
	defer func() {
		close(done)
		for range ch { // drain until the library closes it
		}
	}()
	errc := make(chan error, 1)
	opts := netlink.LinkSubscribeOptions{ErrorCallback: firstError(errc)}
	if err := netlink.LinkSubscribeWithOptions(ch, done, opts); err != nil {
		return err
	}
	// Subscribed first, listed second: a change in between shows up as an
	// event after the listing, which is applied in order.
	present, err := listLinks()
	if err != nil {
		return err
	}
	l.Store.SyncLinks(present)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case u, ok := <-ch:
			if !ok {
				return errors.New("subscription closed")
			}
			name := u.Attrs().Name
			switch u.Header.Type {
			case unix.RTM_DELLINK:
				l.Store.LinkRemoved(name)
			case unix.RTM_NEWLINK:
				l.Store.LinkAdded(name)
			}
		}
	}
}

func listLinks() (map[string]struct{}, error) {
	var links []netlink.Link
	var err error
	for i := 0; i < 5; i++ { // dumps can be interrupted by concurrent changes
		links, err = netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	present := make(map[string]struct{}, len(links))
	for _, k := range links {
		present[k.Attrs().Name] = struct{}{}
	}
	return present, nil
}

func (l *Links) runAddrs(ctx context.Context) {
	for ctx.Err() == nil {
		err := l.addrs(ctx)
		if ctx.Err() != nil {
			return
		}
		l.Logf("[WARNING] plugin/netalias: address subscription: %v; resubscribing", err)
		sleep(ctx, 100*time.Millisecond)
	}
}

func (l *Links) addrs(ctx context.Context) error {
	ch := make(chan netlink.AddrUpdate, 1024)
	done := make(chan struct{})
	defer func() {
		close(done)
		for range ch {
		}
	}()
	errc := make(chan error, 1)
	opts := netlink.AddrSubscribeOptions{ListExisting: true, ErrorCallback: firstError(errc)}
	if err := netlink.AddrSubscribeWithOptions(ch, done, opts); err != nil {
		return err
	}
	local := map[netip.Addr]struct{}{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case u, ok := <-ch:
			if !ok {
				return errors.New("subscription closed")
			}
			a, ok := netip.AddrFromSlice(u.LinkAddress.IP)
			if !ok {
				continue
			}
			a = a.Unmap()
			if u.NewAddr {
				local[a] = struct{}{}
			} else {
				delete(local, a)
			}
			// Publish a copy: readers hold the previous map lock-free.
			cp := make(map[netip.Addr]struct{}, len(local))
			for k := range local {
				cp[k] = struct{}{}
			}
			l.Store.SetHostAddrs(cp)
		}
	}
}

// firstError returns a subscription error callback that keeps the first
// error in errc and drops later ones: any error means resubscribe.
func firstError(errc chan<- error) func(error) {
	return func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
}
