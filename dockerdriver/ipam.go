package dockerdriver

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/libnetwork/ipamapi"
	"github.com/docker/docker/libnetwork/ipams/remote/api"
	"github.com/docker/docker/libnetwork/netlabel"
)

// Address spaces the IPAM driver answers GetDefaultAddressSpaces with.
// Only the local one is served.
const (
	LocalAddressSpace  = "netalias"
	GlobalAddressSpace = "netalias-global"
)

// poolIDPrefix starts every pool ID; the rest is the pool's prefix, so a
// pool ID stays meaningful across plugin restarts (dockerd keeps it).
const poolIDPrefix = "netalias:"

func poolID(p netip.Prefix) string { return poolIDPrefix + p.String() }

func parsePoolID(id string) (netip.Prefix, error) {
	rest, ok := strings.CutPrefix(id, poolIDPrefix)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("pool ID %q was not made by the netalias IPAM driver", id)
	}
	p, err := netip.ParsePrefix(rest)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("pool ID %q: %w", id, err)
	}
	return p, nil
}

// pendingPool is a pool handed to Docker for a network it has not created
// yet. Its gateway is decided here: Docker passes it to CreateNetwork.
type pendingPool struct {
	prefix  netip.Prefix
	gateway netip.Addr
	// name is the netalias network named by --ipam-opt netalias.network,
	// if any; adopt is true when that network already exists (its pool
	// and gateway are the network's).
	name  string
	adopt bool
	since time.Time
}

// pendingTTL bounds how long a pool waits for its CreateNetwork. dockerd
// asks for pools and creates the network within one API call, so an older
// pool was abandoned (dockerd died midway) and would otherwise block its
// subnet until the plugin restarts.
const pendingTTL = 2 * time.Minute

// prunePoolsLocked forgets abandoned pending pools.
func (s *Server) prunePoolsLocked(now time.Time) {
	for id, p := range s.pools {
		if now.Sub(p.since) > pendingTTL {
			s.log.Warn("forgetting a pool whose network was never created", "pool", p.prefix, "held_for", now.Sub(p.since).Round(time.Second))
			delete(s.pools, id)
		}
	}
}

func (s *Server) ipamCapabilities([]byte) (any, error) {
	// No replay on dockerd restart: the backend keeps every reservation.
	return api.GetCapabilityResponse{RequiresMACAddress: false, RequiresRequestReplay: false}, nil
}

func (s *Server) addressSpaces([]byte) (any, error) {
	return api.GetAddressSpacesResponse{LocalDefaultAddressSpace: LocalAddressSpace, GlobalDefaultAddressSpace: GlobalAddressSpace}, nil
}

// firstHost is the default gateway of a pool, as `netalias network create`
// chooses it.
func firstHost(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// lastAddr is the highest address of p (IPv4 broadcast).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// checkHost refuses an address outside p, p's network address, and (IPv4)
// its broadcast address.
func checkHost(what string, p netip.Prefix, a netip.Addr) error {
	if !p.Contains(a) {
		return fmt.Errorf("%s %s is outside the pool %s", what, a, p)
	}
	if a == p.Masked().Addr() {
		return fmt.Errorf("%s %s is the network address of %s", what, a, p)
	}
	if a.Is4() && p.Bits() < 31 && a == lastAddr(p) {
		return fmt.Errorf("%s %s is the broadcast address of %s", what, a, p)
	}
	return nil
}

func (s *Server) requestPool(body []byte) (any, error) {
	var req api.RequestPoolRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	family := "IPv4"
	if req.V6 {
		family = "IPv6"
	}
	if req.AddressSpace != "" && req.AddressSpace != LocalAddressSpace {
		return nil, fmt.Errorf("address space %q is not served: netalias is a local-scope IPAM driver", req.AddressSpace)
	}
	keys := make([]string, 0, len(req.Options))
	for k := range req.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k != OptNetwork {
			return nil, fmt.Errorf("unknown --ipam-opt %s (the netalias IPAM driver knows %s)", k, OptNetwork)
		}
	}
	name := req.Options[OptNetwork]
	var want netip.Prefix
	if req.Pool != "" {
		p, err := netip.ParsePrefix(req.Pool)
		if err != nil {
			return nil, fmt.Errorf("invalid --subnet %q: %w", req.Pool, err)
		}
		if p.Addr().Is4() == req.V6 {
			return nil, fmt.Errorf("--subnet %s is not an %s subnet", p, family)
		}
		want = p.Masked()
	}
	if req.SubPool != "" && req.SubPool != req.Pool {
		return nil, fmt.Errorf("--ip-range %s is not supported: netalias allocates from the whole subnet", req.SubPool)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.prunePoolsLocked(now)
	pp := &pendingPool{name: name, since: now}
	if name != "" {
		info, err := s.be.Network(name)
		switch {
		case err == nil:
			sub, gw := info.Subnet, info.Gateway
			if req.V6 {
				sub, gw = info.Subnet6, info.Gateway6
			}
			if !sub.IsValid() {
				return nil, fmt.Errorf("netalias network %q has no %s subnet", name, family)
			}
			if want.IsValid() && want != sub {
				return nil, fmt.Errorf("--subnet %s: netalias network %q has %s subnet %s", want, name, family, sub)
			}
			pp.prefix, pp.gateway, pp.adopt = sub, gw, true
		case errors.Is(err, ErrNotFound):
			// Created at CreateNetwork with this pool.
		default:
			return nil, fmt.Errorf("netalias network %q: %w", name, err)
		}
	}
	if !pp.prefix.IsValid() {
		var held []netip.Prefix
		for _, p := range s.pools {
			held = append(held, p.prefix)
		}
		if want.IsValid() {
			for _, h := range held {
				if h.Overlaps(want) {
					return nil, fmt.Errorf("--subnet %s overlaps pool %s of another Docker network being created", want, h)
				}
			}
			pp.prefix = want
		} else {
			p, err := s.be.ChooseSubnet(req.V6, held)
			if err != nil {
				return nil, fmt.Errorf("choosing an %s subnet: %w", family, err)
			}
			pp.prefix = p.Masked()
		}
		pp.gateway = firstHost(pp.prefix)
	}
	id := poolID(pp.prefix)
	if _, held := s.pools[id]; held {
		return nil, fmt.Errorf("pool %s is held by another Docker network being created", pp.prefix)
	}
	for did, m := range s.nets {
		if m.Subnet == pp.prefix || m.Subnet6 == pp.prefix {
			return nil, fmt.Errorf("pool %s belongs to Docker network %s (netalias network %q)", pp.prefix, shortID(did), m.Network)
		}
	}
	s.pools[id] = pp
	// The gateway goes back with the pool, so Docker need not request one
	// (it still does for --gateway, answered in RequestAddress).
	return api.RequestPoolResponse{
		PoolID: id,
		Pool:   pp.prefix.String(),
		Data:   map[string]string{netlabel.Gateway: netip.PrefixFrom(pp.gateway, pp.prefix.Bits()).String()},
	}, nil
}

func (s *Server) releasePool(body []byte) (any, error) {
	var req api.ReleasePoolRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	if _, err := parsePoolID(req.PoolID); err != nil {
		return nil, err
	}
	// A created network's pool goes with DeleteNetwork (which Docker
	// sends first); only a pending pool is left to forget.
	s.mu.Lock()
	delete(s.pools, req.PoolID)
	s.mu.Unlock()
	return api.ReleasePoolResponse{}, nil
}

// poolNetwork finds the mapped network whose subnet (IPv4 or IPv6) is p.
func (s *Server) poolNetwork(p netip.Prefix) (mapping, bool) {
	for _, m := range s.nets {
		if m.Subnet == p || m.Subnet6 == p {
			return *m, true
		}
	}
	return mapping{}, false
}

func (s *Server) requestAddress(body []byte) (any, error) {
	var req api.RequestAddressRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	pool, err := parsePoolID(req.PoolID)
	if err != nil {
		return nil, err
	}
	var want netip.Addr
	if req.Address != "" {
		if want, err = parseCIDRAddr(req.Address); err != nil {
			return nil, fmt.Errorf("invalid address %q: %w", req.Address, err)
		}
		want = want.Unmap()
	}
	isGW := req.Options[ipamapi.RequestAddressType] == netlabel.Gateway
	reply := func(a netip.Addr) (any, error) {
		return api.RequestAddressResponse{Address: netip.PrefixFrom(a, pool.Bits()).String()}, nil
	}

	s.mu.Lock()
	if pp, ok := s.pools[req.PoolID]; ok {
		defer s.mu.Unlock()
		if !isGW {
			return nil, fmt.Errorf("auxiliary addresses (--aux-address %s) are not supported by the netalias IPAM driver", want)
		}
		if want.IsValid() {
			if pp.adopt {
				if want != pp.gateway {
					return nil, fmt.Errorf("--gateway %s: netalias network %q has gateway %s", want, pp.name, pp.gateway)
				}
			} else {
				if err := checkHost("--gateway", pp.prefix, want); err != nil {
					return nil, err
				}
				pp.gateway = want
			}
		}
		return reply(pp.gateway)
	}
	m, ok := s.poolNetwork(pool)
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("pool %s is unknown to plugin %q (released, or its network was removed)", pool, s.name)
	}
	if isGW {
		gw := m.Gateway
		if pool == m.Subnet6 {
			gw = m.Gateway6
		}
		if want.IsValid() && want != gw {
			return nil, fmt.Errorf("--gateway %s: netalias network %q has gateway %s", want, m.Network, gw)
		}
		return reply(gw)
	}
	if want.IsValid() && !pool.Contains(want) {
		return nil, fmt.Errorf("address %s is outside netalias network %q's subnet %s", want, m.Network, pool)
	}
	a, err := s.be.AllocAddress(m.Network, pool.Addr().Is6(), want)
	if err != nil {
		return nil, fmt.Errorf("netalias network %q: %w", m.Network, err)
	}
	if !pool.Contains(a) {
		// A backend bug must not hand Docker an address it cannot route.
		s.rollbackAlloc(m.Network, a)
		return nil, fmt.Errorf("netalias network %q: allocated %s outside the pool %s", m.Network, a, pool)
	}
	return reply(a)
}

func (s *Server) rollbackAlloc(network string, a netip.Addr) {
	if err := s.be.ReleaseAddress(network, a); err != nil {
		s.log.Error("releasing an address after a failed request left it reserved", "network", network, "address", a, "err", err)
	}
}

func (s *Server) releaseAddress(body []byte) (any, error) {
	var req api.ReleaseAddressRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	pool, err := parsePoolID(req.PoolID)
	if err != nil {
		return nil, err
	}
	a, err := parseCIDRAddr(req.Address)
	if err != nil || !a.IsValid() {
		return nil, fmt.Errorf("invalid address %q to release from pool %s", req.Address, pool)
	}
	a = a.Unmap()
	s.mu.Lock()
	_, pending := s.pools[req.PoolID]
	m, ok := s.poolNetwork(pool)
	s.mu.Unlock()
	if pending || !ok {
		// A pending pool reserves nothing but its gateway; a pool whose
		// network is gone (Docker releases the gateway after
		// DeleteNetwork) has nothing left to free.
		return api.ReleaseAddressResponse{}, nil
	}
	if a == m.Gateway || (m.Gateway6.IsValid() && a == m.Gateway6) {
		// The gateway belongs to the network, not to Docker.
		return api.ReleaseAddressResponse{}, nil
	}
	if err := s.be.ReleaseAddress(m.Network, a); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("netalias network %q: releasing %s: %w", m.Network, a, err)
	}
	return api.ReleaseAddressResponse{}, nil
}
