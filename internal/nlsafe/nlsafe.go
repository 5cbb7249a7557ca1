// Package nlsafe wraps netlink dumps: the kernel marks a dump that a
// concurrent change interrupted (NLM_F_DUMP_INTR) and the library returns
// the partial data with netlink.ErrDumpInterrupted. Every dump in netalias
// goes through Retry, as CNI's netlinksafe and moby's nlwrap arrange.
package nlsafe

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// Attempts is how often Retry repeats an interrupted dump before it gives
// up and returns the interruption as an error (never the partial data).
const Attempts = 5

// Retry runs dump until it completes without interruption, at most
// Attempts times.
func Retry[T any](dump func() (T, error)) (T, error) {
	var v T
	var err error
	for range Attempts {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	var zero T
	return zero, err
}

// LinkList lists the links of h (nil: the calling thread's namespace).
func LinkList(h *netlink.Handle) ([]netlink.Link, error) {
	if h == nil {
		return Retry(netlink.LinkList)
	}
	return Retry(h.LinkList)
}

// AddrList lists the addresses of link (nil: all) in h's namespace.
func AddrList(h *netlink.Handle, link netlink.Link, family int) ([]netlink.Addr, error) {
	return Retry(func() ([]netlink.Addr, error) {
		if h == nil {
			return netlink.AddrList(link, family)
		}
		return h.AddrList(link, family)
	})
}

// RouteList lists the routes of link (nil: all) in h's namespace.
func RouteList(h *netlink.Handle, link netlink.Link, family int) ([]netlink.Route, error) {
	return Retry(func() ([]netlink.Route, error) {
		if h == nil {
			return netlink.RouteList(link, family)
		}
		return h.RouteList(link, family)
	})
}

// RouteListFiltered lists the routes matching filter in h's namespace.
func RouteListFiltered(h *netlink.Handle, family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return Retry(func() ([]netlink.Route, error) {
		if h == nil {
			return netlink.RouteListFiltered(family, filter, mask)
		}
		return h.RouteListFiltered(family, filter, mask)
	})
}
