package netns

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Handle opens a netlink handle (NETLINK_ROUTE) inside the network
// namespace at path. Requests through it act on that namespace while the
// calling thread stays where it is.
//
// Opening the handle's socket needs setns(2) on a locked thread and back
// (netlink.NewHandleAt). That happens on a goroutine of its own which
// gives its thread back to the scheduler only if the thread is home again;
// otherwise the goroutine exits still locked and the runtime kills the
// thread, so no goroutine ever runs in a foreign namespace (moby's nlwrap
// arranges the same).
func Handle(path string) (*netlink.Handle, error) {
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", path, err)
	}
	defer ns.Close()
	type result struct {
		h   *netlink.Handle
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var home unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &home); err != nil {
			runtime.UnlockOSThread() // nothing switched yet
			res <- result{err: fmt.Errorf("netlink handle in %s: %w", path, err)}
			return
		}
		h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		var now unix.Stat_t
		if serr := unix.Stat("/proc/thread-self/ns/net", &now); serr != nil || now.Dev != home.Dev || now.Ino != home.Ino {
			// Stuck in the wrong namespace: exit locked, the thread dies.
			if h != nil {
				h.Close()
			}
			res <- result{err: fmt.Errorf("netlink handle in %s: thread could not return to its namespace", path)}
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			err = fmt.Errorf("netlink handle in %s: %w", path, err)
		}
		res <- result{h, err}
	}()
	r := <-res
	return r.h, r.err
}

// WithHandle runs fn with a netlink handle inside the namespace at path
// (see Handle) and closes it afterwards.
func WithHandle(path string, fn func(h *netlink.Handle) error) error {
	h, err := Handle(path)
	if err != nil {
		return err
	}
	defer h.Close()
	return fn(h)
}
