// Package fakekernel is an in-memory kernel for the agent's tests: links,
// bridges, veth pairs with their peers inside namespaces, addresses,
// default routes, link groups, firewall tables, forwarding switches,
// resolver files and named namespaces. It implements the agent's kernel
// seam (agent.Links, Veths, Sysctl, Firewall, Resolver, Namespaces) and
// wraps its state files, and it can fail any one mutating call: the
// rollback tests fail each step of an operation in turn and check that
// the state and the kernel end where they began.
package fakekernel

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/netalias/netalias/agent/firewall"
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/state"
)

// ErrInjected is the error of a failed call.
var ErrInjected = errors.New("injected failure")

// Link is a host link.
type Link struct {
	Kind   string // "bridge" or "veth"
	MTU    int
	MAC    string // bridge only: the address it was made with ("": the kernel's)
	Master string // bridge a veth is plugged into
	Group  uint32
	Up     bool
	Addrs  []netip.Prefix
	Peer   Peer // veth only
}

// Peer names a veth's other end.
type Peer struct {
	Netns, Name string
}

// Iface is an interface inside a namespace.
type Iface struct {
	HostPeer string // host veth it is paired with ("" for lo)
	Up       bool
	MAC      string
	Addrs    []netip.Prefix
	Routes   []netip.Addr // default routes via these gateways
}

// State is everything the fake kernel holds; comparable with
// reflect.DeepEqual.
type State struct {
	Links     map[string]Link
	Netns     map[string]map[string]Iface // path → ifname → interface
	Tables    map[string][]firewall.Net
	Forward4  bool
	Forward6  bool
	Resolv    map[string]string // namespace name → "nameserver; search..."
	DeletedNS []string
}

// Kernel is the fake. The zero value is not usable: call New.
type Kernel struct {
	mu sync.Mutex
	s  State
	// Host are the host's prefixes (addresses and routes) for subnet
	// allocation; UplinkMTUValue is its uplink's MTU.
	Host           []netip.Prefix
	UplinkMTUValue int
	// Alive says whether an owner process lives (default: no process is).
	AliveFn func(pid int, start uint64) bool
	// RefuseDelete makes DeleteLink and DeleteGroup fail for these links,
	// every time (a veth the kernel will not let go).
	RefuseDelete map[string]bool

	calls  []string
	failAt int                    // fail the failAt-th mutating call (1-based)
	failFn func(call string) bool // and every call it returns true for
}

// New returns an empty kernel.
func New() *Kernel {
	return &Kernel{s: State{Links: map[string]Link{}, Netns: map[string]map[string]Iface{},
		Tables: map[string][]firewall.Net{}, Resolv: map[string]string{}}, UplinkMTUValue: 1500}
}

// FailNth resets the call log and makes the n-th mutating call from now
// fail (0: none).
func (k *Kernel) FailNth(n int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls, k.failAt = nil, n
}

// FailWhen makes every mutating call for which fn returns true fail (nil:
// none). fn gets the call as logged, e.g. "DeleteLink nav0123456789ab".
func (k *Kernel) FailWhen(fn func(call string) bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.failFn = fn
}

// Calls returns the mutating calls made since the last FailNth.
func (k *Kernel) Calls() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.calls)
}

// call logs a mutating call and says whether it must fail. Callers hold mu.
func (k *Kernel) call(format string, a ...any) error {
	c := fmt.Sprintf(format, a...)
	k.calls = append(k.calls, c)
	if len(k.calls) == k.failAt || (k.failFn != nil && k.failFn(c)) {
		return fmt.Errorf("%s: %w", c, ErrInjected)
	}
	return nil
}

// State returns a deep copy of the kernel's state.
func (k *Kernel) State() State {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := State{Links: map[string]Link{}, Netns: map[string]map[string]Iface{}, Tables: map[string][]firewall.Net{},
		Forward4: k.s.Forward4, Forward6: k.s.Forward6, Resolv: maps.Clone(k.s.Resolv),
		DeletedNS: slices.Clone(k.s.DeletedNS)}
	for n, l := range k.s.Links {
		l.Addrs = slices.Clone(l.Addrs)
		c.Links[n] = l
	}
	for p, ifs := range k.s.Netns {
		m := map[string]Iface{}
		for n, i := range ifs {
			i.Addrs, i.Routes = slices.Clone(i.Addrs), slices.Clone(i.Routes)
			m[n] = i
		}
		c.Netns[p] = m
	}
	for t, nets := range k.s.Tables {
		c.Tables[t] = slices.Clone(nets)
	}
	return c
}

// AddNetns makes a named namespace /run/netns/name with lo (up: a connect
// brings it up and a rollback leaves it so, harmlessly) and returns its
// path.
func (k *Kernel) AddNetns(name string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := filepath.Join(netns.RunDir, name)
	k.s.Netns[p] = map[string]Iface{"lo": {Up: true}}
	return p
}

// AddLink puts a host link in place (a foreign link, a leftover).
func (k *Kernel) AddLink(name string, l Link) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.s.Links[name] = l
}

// RemoveNetns makes a namespace vanish as if its last process exited: its
// veth pairs go with it.
func (k *Kernel) RemoveNetns(path string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dropNetns(path)
}

func (k *Kernel) dropNetns(path string) {
	for _, i := range k.s.Netns[path] {
		if i.HostPeer != "" {
			delete(k.s.Links, i.HostPeer)
		}
	}
	delete(k.s.Netns, path)
}

// Links.

func (k *Kernel) LinkNames() (map[string]bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	m := map[string]bool{}
	for n := range k.s.Links {
		m[n] = true
	}
	return m, nil
}

func (k *Kernel) HostPrefixes() ([]netip.Prefix, error) { return slices.Clone(k.Host), nil }

func (k *Kernel) UplinkMTU(max int) (int, error) {
	if k.UplinkMTUValue > 0 && k.UplinkMTUValue < max {
		return k.UplinkMTUValue, nil
	}
	return max, nil
}

func (k *Kernel) CreateBridge(b link.Bridge) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("CreateBridge %s", b.Name); err != nil {
		return err
	}
	if _, ok := k.s.Links[b.Name]; ok {
		return fmt.Errorf("bridge %s already exists", b.Name)
	}
	l := Link{Kind: "bridge", MTU: b.MTU, Up: true}
	if len(b.MAC) > 0 {
		l.MAC = b.MAC.String()
	}
	for _, g := range []netip.Prefix{b.Gateway, b.Gateway6} {
		if g.IsValid() {
			l.Addrs = append(l.Addrs, g)
		}
	}
	k.s.Links[b.Name] = l
	return nil
}

func (k *Kernel) SetBridgeMAC(name string, mac net.HardwareAddr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("SetBridgeMAC %s", name); err != nil {
		return err
	}
	l, ok := k.s.Links[name]
	if !ok || l.Kind != "bridge" {
		return fmt.Errorf("bridge %s: Link not found", name)
	}
	l.MAC = mac.String()
	k.s.Links[name] = l
	return nil
}

func (k *Kernel) DeleteLink(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("DeleteLink %s", name); err != nil {
		return err
	}
	if k.RefuseDelete[name] {
		return fmt.Errorf("delete %s: device or resource busy", name)
	}
	k.deleteLink(name)
	return nil
}

func (k *Kernel) deleteLink(name string) {
	l, ok := k.s.Links[name]
	if !ok {
		return
	}
	delete(k.s.Links, name)
	if l.Kind == "veth" {
		if l.Peer.Netns == "" {
			delete(k.s.Links, l.Peer.Name) // both ends in the host (pairs.go)
		} else if ifs := k.s.Netns[l.Peer.Netns]; ifs != nil {
			delete(ifs, l.Peer.Name)
		}
	}
	if l.Kind == "bridge" {
		for n, o := range k.s.Links {
			if o.Master == name {
				o.Master = ""
				k.s.Links[n] = o
			}
		}
	}
}

func (k *Kernel) GroupMembers(group uint32) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for n, l := range k.s.Links {
		if l.Group == group {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (k *Kernel) DeleteGroup(group uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("DeleteGroup %d", group); err != nil {
		return err
	}
	for n, l := range k.s.Links {
		if l.Group == group && k.RefuseDelete[n] {
			return fmt.Errorf("delete link group %d: %s is busy", group, n)
		}
	}
	for n, l := range k.s.Links {
		if l.Group == group {
			k.deleteLink(n)
		}
	}
	return nil
}

// Veths.

func (k *Kernel) Attach(v link.Veth) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("Attach %s", v.HostName); err != nil {
		return "", err
	}
	ifs, ok := k.s.Netns[v.Netns]
	if !ok {
		return "", fmt.Errorf("open namespace %s: no such file or directory", v.Netns)
	}
	if br, ok := k.s.Links[v.Bridge]; !ok || br.Kind != "bridge" {
		return "", fmt.Errorf("bridge %s: link not found", v.Bridge)
	}
	ifname := v.IfName
	for i := 0; ifname == ""; i++ {
		if _, used := ifs[fmt.Sprintf("eth%d", i)]; !used {
			ifname = fmt.Sprintf("eth%d", i)
		}
	}
	if _, ok := k.s.Links[v.HostName]; ok {
		return "", fmt.Errorf("create veth %s/%s: an interface with that name exists", v.HostName, ifname)
	}
	if _, ok := ifs[ifname]; ok {
		return "", fmt.Errorf("create veth %s/%s inside %s: %w", v.HostName, ifname, v.Netns, link.ErrExists)
	}
	k.s.Links[v.HostName] = Link{Kind: "veth", MTU: v.MTU, Master: v.Bridge, Group: v.Group, Up: true, Peer: Peer{v.Netns, ifname}}
	in := Iface{HostPeer: v.HostName, Up: true, MAC: v.MAC.String()}
	for _, a := range []netip.Prefix{v.Addr, v.Addr6} {
		if a.IsValid() {
			in.Addrs = append(in.Addrs, a)
		}
	}
	for _, gw := range []netip.Addr{v.Gateway, v.Gateway6} {
		if gw.IsValid() {
			in.Routes = append(in.Routes, gw)
		}
	}
	ifs[ifname] = in
	if lo, ok := ifs["lo"]; ok {
		lo.Up = true
		ifs["lo"] = lo
	}
	return ifname, nil
}

func (k *Kernel) Unplug(host, nsPath, ifname, park string, group uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("Unplug %s", host); err != nil {
		return err
	}
	l, ok := k.s.Links[host]
	if !ok {
		return nil
	}
	l.Master, l.Group = "", group
	k.s.Links[host] = l
	ifs := k.s.Netns[nsPath]
	in, ok := ifs[ifname]
	if !ok || in.HostPeer != host {
		return nil
	}
	// Down, no addresses: the routes through them go too.
	in.Up, in.Addrs, in.Routes = false, nil, nil
	delete(ifs, ifname)
	ifs[park] = in
	l.Peer.Name = park
	k.s.Links[host] = l
	return nil
}

func (k *Kernel) DefaultRoutes(nsPath string) (v4, v6 bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ifs, ok := k.s.Netns[nsPath]
	if !ok {
		return false, false, fmt.Errorf("open namespace %s: no such file or directory", nsPath)
	}
	for _, in := range ifs {
		for _, gw := range in.Routes {
			if gw.Is4() {
				v4 = true
			} else {
				v6 = true
			}
		}
	}
	return v4, v6, nil
}

func (k *Kernel) AddDefaultRoute(nsPath, ifname string, gw netip.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("AddDefaultRoute %s %s via %s", nsPath, ifname, gw); err != nil {
		return err
	}
	in, ok := k.s.Netns[nsPath][ifname]
	if !ok {
		return fmt.Errorf("find %s in %s: link not found", ifname, nsPath)
	}
	in.Routes = append(in.Routes, gw)
	k.s.Netns[nsPath][ifname] = in
	return nil
}

// Sysctl.

func (k *Kernel) EnableForwarding(v6 bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("EnableForwarding v6=%v", v6); err != nil {
		return err
	}
	k.s.Forward4 = true
	k.s.Forward6 = k.s.Forward6 || v6
	return nil
}

// Firewall.

func (k *Kernel) Sync(table string, nets []firewall.Net) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("Sync %s %d networks", table, len(nets)); err != nil {
		return err
	}
	if len(nets) == 0 {
		delete(k.s.Tables, table)
	} else {
		k.s.Tables[table] = slices.Clone(nets)
	}
	return nil
}

func (k *Kernel) Healthy(table string, nets []firewall.Net) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Equal(k.s.Tables[table], nets), nil
}

// Resolver.

func (k *Kernel) Write(name, nameserver string, search []string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("Resolver.Write %s", name); err != nil {
		return err
	}
	k.s.Resolv[name] = nameserver + "; " + strings.Join(search, " ")
	return nil
}

func (k *Kernel) Remove(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("Resolver.Remove %s", name); err != nil {
		return err
	}
	delete(k.s.Resolv, name)
	return nil
}

// Namespaces.

func (k *Kernel) Resolve(arg string) (netns.Ref, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := netns.Ref{Path: arg}
	if !strings.Contains(arg, "/") {
		r.Path, r.Name = filepath.Join(netns.RunDir, arg), arg
	} else if filepath.Dir(arg) == netns.RunDir {
		r.Name = filepath.Base(arg)
	}
	if _, ok := k.s.Netns[r.Path]; !ok {
		return r, fmt.Errorf("namespace %q: %s does not exist", arg, r.Path)
	}
	return r, nil
}

func (k *Kernel) Same(a, b string) bool { return a == b }

func (k *Kernel) Alive(pid int, start uint64) bool {
	return k.AliveFn != nil && k.AliveFn(pid, start)
}

func (k *Kernel) Delete(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("Namespaces.Delete %s", name); err != nil {
		return err
	}
	p := filepath.Join(netns.RunDir, name)
	if _, ok := k.s.Netns[p]; ok {
		k.dropNetns(p)
		k.s.DeletedNS = append(k.s.DeletedNS, name)
	}
	return nil
}

// Files wraps a state directory's writer: its writes count as mutating
// calls and can fail like the kernel's.
type Files struct {
	K     *Kernel
	Inner interface {
		Write(f *state.File) error
		WriteIntent(f *state.File) error
		Remove(name string) error
	}
}

func (f Files) Write(sf *state.File) error {
	if err := f.K.locked(func() error { return f.K.call("Write %s", sf.Network.Name) }); err != nil {
		return err
	}
	return f.Inner.Write(sf)
}

func (f Files) WriteIntent(sf *state.File) error {
	if err := f.K.locked(func() error { return f.K.call("WriteIntent %s", sf.Network.Name) }); err != nil {
		return err
	}
	return f.Inner.WriteIntent(sf)
}

func (f Files) Remove(name string) error {
	if err := f.K.locked(func() error { return f.K.call("Remove %s", name) }); err != nil {
		return err
	}
	return f.Inner.Remove(name)
}

func (k *Kernel) locked(fn func() error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return fn()
}
