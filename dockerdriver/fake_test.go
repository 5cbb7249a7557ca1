package dockerdriver

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// fakeBackend is an in-memory Backend: networks, address reservations and
// endpoints, with failures to inject. It checks what the agent will check
// (overlaps, taken addresses), so protocol mistakes show as failures.
type fakeBackend struct {
	mu       sync.Mutex
	nets     map[string]*fakeNet
	next     int   // next subnet ChooseSubnet offers: 10.99.next.0/24
	fail     error // returned by the next mutating call when set
	failOnly string
	created  []NetworkSpec
}

type fakeNet struct {
	info     NetworkInfo
	mtu      int
	reserved map[netip.Addr]bool
	eps      map[string]*fakeEP
	byAgent  bool // made outside the driver (`netalias network create`)
}

type fakeEP struct {
	spec    EndpointSpec
	sandbox string
}

func newFake() *fakeBackend {
	return &fakeBackend{nets: map[string]*fakeNet{}, next: 1}
}

// addAgentNetwork makes a network as `netalias network create` would.
func (f *fakeBackend) addAgentNetwork(info NetworkInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nets[info.Name] = &fakeNet{info: info, reserved: map[netip.Addr]bool{}, eps: map[string]*fakeEP{}, byAgent: true}
}

// injected returns the injected failure for method, consuming it.
func (f *fakeBackend) injected(method string) error {
	if f.fail != nil && (f.failOnly == "" || f.failOnly == method) {
		err := f.fail
		f.fail, f.failOnly = nil, ""
		return err
	}
	return nil
}

func (f *fakeBackend) Network(name string) (NetworkInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nets[name]
	if !ok {
		return NetworkInfo{}, fmt.Errorf("network %q: %w", name, ErrNotFound)
	}
	return n.info, nil
}

func (f *fakeBackend) ChooseSubnet(v6 bool, avoid []netip.Prefix) (netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ; f.next < 255; f.next++ {
		p := netip.MustParsePrefix(fmt.Sprintf("10.99.%d.0/24", f.next))
		if v6 {
			p = netip.MustParsePrefix(fmt.Sprintf("fd99:0:0:%x::/64", f.next))
		}
		if !f.overlapsLocked(p) && !overlapsAny(p, avoid) {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free subnet")
}

func overlapsAny(p netip.Prefix, list []netip.Prefix) bool {
	for _, q := range list {
		if q.Overlaps(p) {
			return true
		}
	}
	return false
}

func (f *fakeBackend) overlapsLocked(p netip.Prefix) bool {
	for _, n := range f.nets {
		if n.info.Subnet.Overlaps(p) || (n.info.Subnet6.IsValid() && n.info.Subnet6.Overlaps(p)) {
			return true
		}
	}
	return false
}

func (f *fakeBackend) CreateNetwork(spec NetworkSpec) (NetworkInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("CreateNetwork"); err != nil {
		return NetworkInfo{}, err
	}
	if _, ok := f.nets[spec.Name]; ok {
		return NetworkInfo{}, fmt.Errorf("network %q already exists", spec.Name)
	}
	if f.overlapsLocked(spec.Subnet) || (spec.Subnet6.IsValid() && f.overlapsLocked(spec.Subnet6)) {
		return NetworkInfo{}, fmt.Errorf("subnet %s overlaps another network", spec.Subnet)
	}
	if !spec.Subnet.Contains(spec.Gateway) {
		return NetworkInfo{}, fmt.Errorf("gateway %s outside %s", spec.Gateway, spec.Subnet)
	}
	info := NetworkInfo{Name: spec.Name, Subnet: spec.Subnet, Gateway: spec.Gateway, Subnet6: spec.Subnet6, Gateway6: spec.Gateway6, Internal: spec.Internal}
	f.nets[spec.Name] = &fakeNet{info: info, mtu: spec.MTU, reserved: map[netip.Addr]bool{}, eps: map[string]*fakeEP{}}
	f.created = append(f.created, spec)
	return info, nil
}

func (f *fakeBackend) RemoveNetwork(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("RemoveNetwork"); err != nil {
		return err
	}
	n, ok := f.nets[name]
	if !ok {
		return fmt.Errorf("network %q: %w", name, ErrNotFound)
	}
	if len(n.eps) > 0 {
		return fmt.Errorf("network %q has %d endpoints", name, len(n.eps))
	}
	delete(f.nets, name)
	return nil
}

func (f *fakeBackend) AllocAddress(network string, v6 bool, want netip.Addr) (netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("AllocAddress"); err != nil {
		return netip.Addr{}, err
	}
	n, ok := f.nets[network]
	if !ok {
		return netip.Addr{}, fmt.Errorf("network %q: %w", network, ErrNotFound)
	}
	sub := n.info.Subnet
	if v6 {
		sub = n.info.Subnet6
	}
	if want.IsValid() && want.Is6() != v6 {
		return netip.Addr{}, fmt.Errorf("address %s is not of the family asked for", want)
	}
	if want.IsValid() {
		if !sub.Contains(want) || want == n.info.Gateway || n.reserved[want] {
			return netip.Addr{}, fmt.Errorf("address %s is not available on network %q", want, network)
		}
		n.reserved[want] = true
		return want, nil
	}
	for a := sub.Addr().Next(); sub.Contains(a) && a != lastAddr(sub); a = a.Next() {
		if a != n.info.Gateway && a != n.info.Gateway6 && !n.reserved[a] {
			n.reserved[a] = true
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("network %q is full", network)
}

func (f *fakeBackend) ReleaseAddress(network string, addr netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n, ok := f.nets[network]; ok {
		delete(n.reserved, addr)
	}
	return nil
}

func (f *fakeBackend) CreateEndpoint(spec EndpointSpec) (EndpointInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.injected("CreateEndpoint"); err != nil {
		return EndpointInfo{}, err
	}
	n, ok := f.nets[spec.Network]
	if !ok {
		return EndpointInfo{}, fmt.Errorf("network %q: %w", spec.Network, ErrNotFound)
	}
	for _, a := range []netip.Addr{spec.IPv4, spec.IPv6} {
		if a.IsValid() && !n.reserved[a] {
			return EndpointInfo{}, fmt.Errorf("address %s is not reserved on network %q", a, spec.Network)
		}
	}
	if _, dup := n.eps[spec.EndpointID]; dup {
		return EndpointInfo{}, fmt.Errorf("endpoint %s exists", spec.EndpointID)
	}
	mac := spec.MAC
	if mac == nil {
		a4 := spec.IPv4.As4()
		mac = net.HardwareAddr{0x02, 0x42, a4[0], a4[1], a4[2], a4[3]}
	}
	spec.MAC = mac
	n.eps[spec.EndpointID] = &fakeEP{spec: spec}
	return EndpointInfo{HostVeth: "nav" + spec.EndpointID[:12], MAC: mac}, nil
}

func (f *fakeBackend) DeleteEndpoint(network, endpointID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nets[network]
	if !ok {
		return fmt.Errorf("network %q: %w", network, ErrNotFound)
	}
	if _, ok := n.eps[endpointID]; !ok {
		return fmt.Errorf("endpoint %s: %w", endpointID, ErrNotFound)
	}
	delete(n.eps, endpointID)
	return nil
}

func (f *fakeBackend) Join(network, endpointID, sandboxKey string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nets[network]
	if !ok {
		return "", fmt.Errorf("network %q: %w", network, ErrNotFound)
	}
	ep, ok := n.eps[endpointID]
	if !ok {
		return "", fmt.Errorf("endpoint %s: %w", endpointID, ErrNotFound)
	}
	ep.sandbox = sandboxKey
	return "nap" + endpointID[:12], nil
}

func (f *fakeBackend) Leave(network, endpointID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nets[network]
	if !ok {
		return fmt.Errorf("network %q: %w", network, ErrNotFound)
	}
	ep, ok := n.eps[endpointID]
	if !ok {
		return fmt.Errorf("endpoint %s: %w", endpointID, ErrNotFound)
	}
	ep.sandbox = ""
	return nil
}

// snapshot returns a network's reservations and endpoints for assertions.
func (f *fakeBackend) snapshot(name string) (ok bool, reserved []netip.Addr, eps int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nets[name]
	if !ok {
		return false, nil, 0
	}
	for a := range n.reserved {
		reserved = append(reserved, a)
	}
	return true, reserved, len(n.eps)
}
