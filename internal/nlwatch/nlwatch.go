// Package nlwatch is netalias's one netlink subscription loop, shared by
// the agent daemon (a deleted veth kicks a reconcile) and netwatch (a
// vanished host veth hides its endpoint at once).
//
// Each loop subscribes first and lists second (through internal/nlsafe),
// so a change made during the listing arrives as an event after it. Any
// subscription error (ENOBUFS under a burst, a closed socket, a malformed
// message) ends the subscription: the loop closes it, drains the channel
// until the library closes it (its receiving goroutine never blocks on a
// send nobody reads), waits with backoff and starts over with a fresh
// listing, the resync.
package nlwatch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/netalias/netalias/internal/backoff"
	"github.com/netalias/netalias/internal/nlsafe"
)

// queueLen is the subscription channel's length: room for a burst while a
// handler runs.
const queueLen = 1024

// ErrResubscribe is the error a subscription ends with after Resubscribe.
var ErrResubscribe = errors.New("resubscription requested")

// Watcher follows links and addresses of one network namespace.
type Watcher struct {
	ns      *netns.NsHandle
	onError func(error)

	mu    sync.Mutex
	force chan struct{} // closed by Resubscribe, then replaced
}

// New returns a watcher of the namespace ns (nil: the namespace of the
// process's threads). onError (may be nil) hears each lost subscription
// before the loop waits and resubscribes.
func New(ns *netns.NsHandle, onError func(error)) *Watcher {
	return &Watcher{ns: ns, onError: onError, force: make(chan struct{})}
}

// Resubscribe ends the current subscriptions as if they had failed: each
// loop resubscribes and resyncs at once.
func (w *Watcher) Resubscribe() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.force)
	w.force = make(chan struct{})
}

func (w *Watcher) forced() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.force
}

// Links follows links until ctx is done. sync gets the complete list after
// every (re)subscription, then update gets each change in order.
func (w *Watcher) Links(ctx context.Context, sync func([]netlink.Link), update func(netlink.LinkUpdate)) {
	run(ctx, w, "link", func(ch chan netlink.LinkUpdate, done chan struct{}, cb func(error)) error {
		return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{Namespace: w.ns, ErrorCallback: cb})
	}, func(h *netlink.Handle) error {
		links, err := nlsafe.LinkList(h)
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		sync(links)
		return nil
	}, update)
}

// Addrs follows addresses of every family until ctx is done. sync gets the
// complete list after every (re)subscription, then update gets each change.
func (w *Watcher) Addrs(ctx context.Context, sync func([]netlink.Addr), update func(netlink.AddrUpdate)) {
	run(ctx, w, "address", func(ch chan netlink.AddrUpdate, done chan struct{}, cb func(error)) error {
		return netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: w.ns, ErrorCallback: cb})
	}, func(h *netlink.Handle) error {
		addrs, err := nlsafe.AddrList(h, nil, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		sync(addrs)
		return nil
	}, update)
}

type subscribeFunc[U any] func(ch chan U, done chan struct{}, cb func(error)) error

func run[U any](ctx context.Context, w *Watcher, what string, subscribe subscribeFunc[U], list func(*netlink.Handle) error, update func(U)) {
	var b backoff.Backoff
	for ctx.Err() == nil {
		err := session(ctx, w, subscribe, list, update, b.Reset)
		if ctx.Err() != nil {
			return
		}
		if w.onError != nil {
			w.onError(fmt.Errorf("%s subscription: %w", what, err))
		}
		if errors.Is(err, ErrResubscribe) {
			continue
		}
		if !b.Wait(ctx) {
			return
		}
	}
}

// session runs one subscription: subscribe, list, follow until an error,
// a forced resubscription or ctx's end. synced runs once the listing went
// through (the backoff starts again from its minimum).
func session[U any](ctx context.Context, w *Watcher, subscribe subscribeFunc[U], list func(*netlink.Handle) error, update func(U), synced func()) error {
	force := w.forced()
	h, err := w.handle()
	if err != nil {
		return err
	}
	if h != nil {
		defer h.Close()
	}
	ch := make(chan U, queueLen)
	done := make(chan struct{})
	errc := make(chan error, 1)
	if err := subscribe(ch, done, firstError(errc)); err != nil {
		close(done)
		return err // the library started no receiver: nothing to drain
	}
	defer func() {
		close(done)
		for range ch { // until the library's receiver closes it
		}
	}()
	if err := list(h); err != nil {
		return err
	}
	synced()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-force:
			return ErrResubscribe
		case err := <-errc:
			return err
		case u, ok := <-ch:
			if !ok {
				// The receiver ends only after an error; it may not have
				// reached errc before the close.
				select {
				case err := <-errc:
					return err
				default:
					return errors.New("subscription closed")
				}
			}
			update(u)
		}
	}
}

// handle opens a handle in the watched namespace for the listings (nil:
// the package handle, in the process's namespace).
func (w *Watcher) handle() (*netlink.Handle, error) {
	if w.ns == nil {
		return nil, nil
	}
	h, err := netlink.NewHandleAt(*w.ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in namespace %v: %w", *w.ns, err)
	}
	return h, nil
}

// firstError returns a subscription error callback that keeps the first
// error in errc and drops later ones: any error means resubscribe. It never
// blocks the library's receiver.
func firstError(errc chan<- error) func(error) {
	return func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
}
