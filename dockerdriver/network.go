package dockerdriver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/libnetwork/drivers/remote/api"
	"github.com/docker/docker/libnetwork/netlabel"
)

// OptNetwork is the driver option (`docker network create -o
// netalias.network=NAME`) and IPAM option (`--ipam-opt`) naming the
// netalias network a Docker network uses: created when it does not exist,
// adopted when it does.
const OptNetwork = "netalias.network"

// DefaultNetworkPrefix starts the netalias network's name when no option
// names one: Docker tells drivers a network's ID, never its name, so the
// default is "docker-" and the first 12 hex digits of the ID.
const DefaultNetworkPrefix = "docker-"

// DstPrefix is the name Docker gives the interface inside the container,
// followed by its index (eth0, eth1, ...).
const DstPrefix = "eth"

func (s *Server) capabilities([]byte) (any, error) {
	return api.GetCapabilityResponse{Scope: "local", ConnectivityScope: "local"}, nil
}

// netOptions is what CreateNetwork's options ask for.
type netOptions struct {
	name     string // -o netalias.network
	mtu      int    // -o com.docker.network.driver.mtu
	internal bool   // --internal
	ipv6     bool   // --ipv6
	noIPv4   bool   // --ipv4=false (Docker 28)
}

// parseNetOptions reads CreateNetwork's options: the -o map under
// com.docker.network.generic, and Docker's own flags beside it. An -o the
// driver does not know is refused (a typo would otherwise pass silently),
// except Docker's own com.docker.* ones.
func parseNetOptions(opts map[string]any) (netOptions, error) {
	var o netOptions
	var err error
	if o.internal, err = boolOpt(opts, netlabel.Internal); err != nil {
		return o, err
	}
	if o.ipv6, err = boolOpt(opts, netlabel.EnableIPv6); err != nil {
		return o, err
	}
	if v, ok := opts[netlabel.EnableIPv4]; ok {
		b, isBool := v.(bool)
		if !isBool {
			return o, fmt.Errorf("option %s: not a boolean: %v", netlabel.EnableIPv4, v)
		}
		o.noIPv4 = !b
	}
	raw, ok := opts[netlabel.GenericData]
	if !ok || raw == nil {
		return o, nil
	}
	generic, ok := raw.(map[string]any)
	if !ok {
		return o, fmt.Errorf("option %s: not a map: %T", netlabel.GenericData, raw)
	}
	keys := make([]string, 0, len(generic))
	for k := range generic {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, ok := generic[k].(string)
		if !ok {
			return o, fmt.Errorf("option -o %s: not a string: %v", k, generic[k])
		}
		switch {
		case k == OptNetwork:
			if v == "" {
				return o, fmt.Errorf("option -o %s: empty network name", OptNetwork)
			}
			o.name = v
		case k == netlabel.DriverMTU:
			if o.mtu, err = strconv.Atoi(v); err != nil || o.mtu < 68 || o.mtu > 65535 {
				return o, fmt.Errorf("option -o %s=%q: not an MTU between 68 and 65535", k, v)
			}
		case strings.HasPrefix(k, "com.docker."):
			// Docker's own (or another driver's); not ours to judge.
		default:
			return o, fmt.Errorf("unknown option -o %s (the netalias driver knows %s and %s)", k, OptNetwork, netlabel.DriverMTU)
		}
	}
	return o, nil
}

func boolOpt(opts map[string]any, key string) (bool, error) {
	v, ok := opts[key]
	if !ok || v == nil {
		return false, nil
	}
	switch b := v.(type) {
	case bool:
		return b, nil
	case string: // dockerd sends booleans, but be lenient with a string
		r, err := strconv.ParseBool(b)
		if err != nil {
			return false, fmt.Errorf("option %s: not a boolean: %q", key, b)
		}
		return r, nil
	}
	return false, fmt.Errorf("option %s: not a boolean: %v", key, v)
}

// ipNetPrefix converts Docker's *net.IPNet (address with its mask, the
// address not masked for a gateway) into a prefix.
func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

func (s *Server) createNetwork(body []byte) (any, error) {
	var req api.CreateNetworkRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	id := req.NetworkID
	if id == "" {
		return nil, errors.New("CreateNetwork without a NetworkID")
	}
	o, err := parseNetOptions(req.Options)
	if err != nil {
		return nil, fmt.Errorf("docker network %s: %w", shortID(id), err)
	}
	if o.noIPv4 || len(req.IPv4Data) == 0 {
		return nil, fmt.Errorf("docker network %s: netalias networks need IPv4 (--ipv4=false is not supported)", shortID(id))
	}
	if len(req.IPv4Data) > 1 || len(req.IPv6Data) > 1 {
		return nil, fmt.Errorf("docker network %s: a netalias network has one IPv4 and at most one IPv6 subnet (give --subnet once per family)", shortID(id))
	}
	var spec NetworkSpec
	spec.DockerID = id
	spec.Internal = o.internal
	spec.MTU = o.mtu
	d4 := req.IPv4Data[0]
	if len(d4.AuxAddresses) > 0 {
		return nil, fmt.Errorf("docker network %s: auxiliary addresses (--aux-address) are not supported", shortID(id))
	}
	sub, ok1 := ipNetPrefix(d4.Pool)
	gw, ok2 := ipNetPrefix(d4.Gateway)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("docker network %s: IPv4 pool or gateway missing (is the network's IPAM driver %q?)", shortID(id), s.name)
	}
	spec.Subnet, spec.Gateway = sub.Masked(), gw.Addr()
	if len(req.IPv6Data) == 1 {
		d6 := req.IPv6Data[0]
		if len(d6.AuxAddresses) > 0 {
			return nil, fmt.Errorf("docker network %s: auxiliary addresses (--aux-address) are not supported", shortID(id))
		}
		sub6, ok1 := ipNetPrefix(d6.Pool)
		gw6, ok2 := ipNetPrefix(d6.Gateway)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("docker network %s: IPv6 pool or gateway missing (is the network's IPAM driver %q?)", shortID(id), s.name)
		}
		spec.Subnet6, spec.Gateway6 = sub6.Masked(), gw6.Addr()
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.nets[id]; ok {
		// Already made (a retry after an answer that was lost).
		s.log.Info("CreateNetwork for a known Docker network", "docker_network", id, "network", m.Network)
		s.dropPoolsLocked(spec)
		return api.CreateNetworkResponse{}, nil
	}
	pp := s.pools[poolID(spec.Subnet)]
	var pp6 *pendingPool
	if spec.Subnet6.IsValid() {
		pp6 = s.pools[poolID(spec.Subnet6)]
	}
	if pp == nil || (spec.Subnet6.IsValid() && pp6 == nil) {
		return nil, fmt.Errorf("docker network %s: pool %s was not handed out by this plugin's IPAM driver: create the network with --ipam-driver %s (if the plugin restarted meanwhile, run the command again)", shortID(id), spec.Subnet, s.name)
	}
	spec.Name = o.name
	for _, p := range []*pendingPool{pp, pp6} {
		if p == nil || p.name == "" {
			continue
		}
		if spec.Name == "" {
			spec.Name = p.name
		} else if spec.Name != p.name {
			return nil, fmt.Errorf("docker network %s: -o %s=%s but --ipam-opt %s=%s: they must agree", shortID(id), OptNetwork, spec.Name, OptNetwork, p.name)
		}
	}
	if spec.Name == "" {
		spec.Name = DefaultNetworkPrefix + shortID(id)
	}
	for other, m := range s.nets {
		if m.Network == spec.Name {
			return nil, fmt.Errorf("netalias network %q is already used by Docker network %s", spec.Name, shortID(other))
		}
	}

	info, err := s.be.Network(spec.Name)
	switch {
	case err == nil:
		if err := adoptable(info, spec); err != nil {
			return nil, err
		}
		m := mappingOf(info, false)
		s.nets[id] = m
		if err := saveMap(s.mapPath, s.nets); err != nil {
			delete(s.nets, id)
			return nil, err
		}
		s.log.Info("Docker network adopts netalias network", "docker_network", id, "network", info.Name)
	case errors.Is(err, ErrNotFound):
		// The record first: a crash after the create must not lose what
		// the plugin made (a record of a network that was never made is
		// harmless, its removal finds nothing).
		s.nets[id] = mappingOf(NetworkInfo{
			Name: spec.Name, Subnet: spec.Subnet, Gateway: spec.Gateway,
			Subnet6: spec.Subnet6, Gateway6: spec.Gateway6, Internal: spec.Internal,
		}, true)
		if err := saveMap(s.mapPath, s.nets); err != nil {
			delete(s.nets, id)
			return nil, err
		}
		if _, err := s.be.CreateNetwork(spec); err != nil {
			delete(s.nets, id)
			if serr := saveMap(s.mapPath, s.nets); serr != nil {
				s.log.Error("map keeps a network that was not created; DeleteNetwork will find nothing", "docker_network", id, "network", spec.Name, "err", serr)
			}
			return nil, fmt.Errorf("docker network %s: creating netalias network %q: %w", shortID(id), spec.Name, err)
		}
		s.log.Info("Docker network creates netalias network", "docker_network", id, "network", spec.Name, "subnet", spec.Subnet, "subnet6", spec.Subnet6, "internal", spec.Internal)
	default:
		return nil, fmt.Errorf("docker network %s: netalias network %q: %w", shortID(id), spec.Name, err)
	}
	s.dropPoolsLocked(spec)
	return api.CreateNetworkResponse{}, nil
}

// dropPoolsLocked forgets the pending pools of a created network: they
// belong to the network now, and the map finds them by subnet.
func (s *Server) dropPoolsLocked(spec NetworkSpec) {
	delete(s.pools, poolID(spec.Subnet))
	if spec.Subnet6.IsValid() {
		delete(s.pools, poolID(spec.Subnet6))
	}
}

// adoptable checks that an existing netalias network is what Docker was
// told the network is.
func adoptable(info NetworkInfo, spec NetworkSpec) error {
	if info.Subnet != spec.Subnet {
		return fmt.Errorf("netalias network %q has subnet %s, Docker's pool is %s: give --subnet %s (or --ipam-opt %s=%s)", info.Name, info.Subnet, spec.Subnet, info.Subnet, OptNetwork, info.Name)
	}
	if info.Gateway != spec.Gateway {
		return fmt.Errorf("netalias network %q has gateway %s, not %s", info.Name, info.Gateway, spec.Gateway)
	}
	if spec.Subnet6.IsValid() {
		if !info.Subnet6.IsValid() {
			return fmt.Errorf("netalias network %q has no IPv6 subnet: create the Docker network without --ipv6", info.Name)
		}
		if info.Subnet6 != spec.Subnet6 || info.Gateway6 != spec.Gateway6 {
			return fmt.Errorf("netalias network %q has IPv6 subnet %s gateway %s, Docker's are %s and %s", info.Name, info.Subnet6, info.Gateway6, spec.Subnet6, spec.Gateway6)
		}
	}
	if info.Internal != spec.Internal {
		if info.Internal {
			return fmt.Errorf("netalias network %q is internal: create the Docker network with --internal", info.Name)
		}
		return fmt.Errorf("netalias network %q is not internal: create the Docker network without --internal", info.Name)
	}
	return nil
}

func mappingOf(info NetworkInfo, created bool) *mapping {
	return &mapping{
		Network: info.Name, Created: created,
		Subnet: info.Subnet, Gateway: info.Gateway,
		Subnet6: info.Subnet6, Gateway6: info.Gateway6,
		Internal: info.Internal, Since: time.Now().UTC(),
	}
}

func (s *Server) deleteNetwork(body []byte) (any, error) {
	var req api.DeleteNetworkRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.nets[req.NetworkID]
	if !ok {
		// Removal is idempotent: a retry, or a network made before a map
		// was lost; either way nothing of ours is left to remove.
		s.log.Info("DeleteNetwork for an unknown Docker network", "docker_network", req.NetworkID)
		return api.DeleteNetworkResponse{}, nil
	}
	if m.Created {
		if err := s.be.RemoveNetwork(m.Network); err != nil && !errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("docker network %s: removing netalias network %q: %w", shortID(req.NetworkID), m.Network, err)
		}
	}
	delete(s.nets, req.NetworkID)
	if err := saveMap(s.mapPath, s.nets); err != nil {
		// Keep memory as the disk says; a retry finds the network gone.
		s.nets[req.NetworkID] = m
		return nil, err
	}
	s.log.Info("Docker network removed", "docker_network", req.NetworkID, "network", m.Network, "removed_netalias_network", m.Created)
	return api.DeleteNetworkResponse{}, nil
}

// lookup returns a copy of the mapping of a Docker network.
func (s *Server) lookup(dockerID string) (mapping, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.nets[dockerID]
	if !ok {
		return mapping{}, false
	}
	return *m, true
}

func (s *Server) unknownNetwork(dockerID string) error {
	return fmt.Errorf("docker network %s is unknown to plugin %q (not created through it, or its map in %s was lost)", shortID(dockerID), s.name, s.mapPath)
}

func (s *Server) createEndpoint(body []byte) (any, error) {
	var req api.CreateEndpointRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	m, ok := s.lookup(req.NetworkID)
	if !ok {
		return nil, s.unknownNetwork(req.NetworkID)
	}
	what := fmt.Sprintf("endpoint %s on netalias network %q", shortID(req.EndpointID), m.Network)
	if req.EndpointID == "" {
		return nil, fmt.Errorf("CreateEndpoint on netalias network %q without an EndpointID", m.Network)
	}
	iface := req.Interface
	if iface == nil {
		iface = &api.EndpointInterface{}
	}
	spec := EndpointSpec{Network: m.Network, EndpointID: req.EndpointID, DockerID: req.NetworkID}
	var err error
	if spec.IPv4, err = parseCIDRAddr(iface.Address); err != nil {
		return nil, fmt.Errorf("%s: bad address %q: %w", what, iface.Address, err)
	}
	if spec.IPv6, err = parseCIDRAddr(iface.AddressIPv6); err != nil {
		return nil, fmt.Errorf("%s: bad IPv6 address %q: %w", what, iface.AddressIPv6, err)
	}
	if iface.MacAddress != "" {
		if spec.MAC, err = net.ParseMAC(iface.MacAddress); err != nil {
			return nil, fmt.Errorf("%s: bad MAC address %q: %w", what, iface.MacAddress, err)
		}
	}
	// Addresses come from our IPAM (through Docker); one from anywhere
	// else would collide with the network's other members.
	if !spec.IPv4.IsValid() {
		return nil, fmt.Errorf("%s: Docker gave no IPv4 address (is the network's IPAM driver %q?)", what, s.name)
	}
	if !m.Subnet.Contains(spec.IPv4) {
		return nil, fmt.Errorf("%s: address %s is outside the network's subnet %s (is the network's IPAM driver %q?)", what, spec.IPv4, m.Subnet, s.name)
	}
	if spec.IPv6.IsValid() && !m.Subnet6.Contains(spec.IPv6) {
		return nil, fmt.Errorf("%s: IPv6 address %s is outside the network's IPv6 subnet %v", what, spec.IPv6, m.Subnet6)
	}
	info, err := s.be.CreateEndpoint(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	// Docker rolls the endpoint back if a reply changes what it set: only
	// the MAC, when Docker left it to us, goes back.
	var resp api.CreateEndpointResponse
	if iface.MacAddress == "" && len(info.MAC) > 0 {
		resp.Interface = &api.EndpointInterface{MacAddress: info.MAC.String()}
	}
	s.log.Debug("endpoint created", "endpoint", req.EndpointID, "network", m.Network, "ipv4", spec.IPv4, "ipv6", spec.IPv6, "host_veth", info.HostVeth)
	return resp, nil
}

func (s *Server) endpointOperInfo(body []byte) (any, error) {
	var req api.EndpointInfoRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	m, ok := s.lookup(req.NetworkID)
	if !ok {
		return nil, s.unknownNetwork(req.NetworkID)
	}
	return api.EndpointInfoResponse{Value: map[string]any{OptNetwork: m.Network}}, nil
}

func (s *Server) deleteEndpoint(body []byte) (any, error) {
	var req api.DeleteEndpointRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	m, ok := s.lookup(req.NetworkID)
	if !ok {
		s.log.Info("DeleteEndpoint on an unknown Docker network", "docker_network", req.NetworkID, "endpoint", req.EndpointID)
		return api.DeleteEndpointResponse{}, nil
	}
	if err := s.be.DeleteEndpoint(m.Network, req.EndpointID); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("endpoint %s on netalias network %q: %w", shortID(req.EndpointID), m.Network, err)
	}
	return api.DeleteEndpointResponse{}, nil
}

func (s *Server) join(body []byte) (any, error) {
	var req api.JoinRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	m, ok := s.lookup(req.NetworkID)
	if !ok {
		return nil, s.unknownNetwork(req.NetworkID)
	}
	peer, err := s.be.Join(m.Network, req.EndpointID, req.SandboxKey)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s on netalias network %q: join %s: %w", shortID(req.EndpointID), m.Network, req.SandboxKey, err)
	}
	resp := api.JoinResponse{InterfaceName: &api.InterfaceName{SrcName: peer, DstPrefix: DstPrefix}}
	if m.Internal {
		// No way out: no default route, and no docker_gwbridge either,
		// which would bypass the isolation.
		resp.DisableGatewayService = true
	} else {
		resp.Gateway = m.Gateway.String()
		if m.Gateway6.IsValid() {
			resp.GatewayIPv6 = m.Gateway6.String()
		}
	}
	return resp, nil
}

func (s *Server) leave(body []byte) (any, error) {
	var req api.LeaveRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	m, ok := s.lookup(req.NetworkID)
	if !ok {
		return api.LeaveResponse{}, nil
	}
	if err := s.be.Leave(m.Network, req.EndpointID); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("endpoint %s on netalias network %q: leave: %w", shortID(req.EndpointID), m.Network, err)
	}
	return api.LeaveResponse{}, nil
}

func (s *Server) discover(body []byte) (any, error) {
	var req api.DiscoveryNotification
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	return api.DiscoveryResponse{}, nil
}

// programExternal refuses published ports: the driver programs no port
// mappings, and a -p that silently did nothing would be worse.
func (s *Server) programExternal(body []byte) (any, error) {
	var req api.ProgramExternalConnectivityRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	if pm, ok := req.Options[netlabel.PortMap].([]any); ok && len(pm) > 0 {
		name := req.NetworkID
		if m, ok := s.lookup(req.NetworkID); ok {
			name = m.Network
		}
		return nil, fmt.Errorf("endpoint %s on netalias network %q: publishing ports (-p, -P) is not supported on netalias networks", shortID(req.EndpointID), name)
	}
	return api.ProgramExternalConnectivityResponse{}, nil
}

func (s *Server) revokeExternal(body []byte) (any, error) {
	var req api.RevokeExternalConnectivityRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	return api.RevokeExternalConnectivityResponse{}, nil
}

var errSwarm = errors.New("netalias is a local-scope driver: swarm (global-scope) networks are not supported")

func (s *Server) allocateNetwork(body []byte) (any, error) {
	var req api.AllocateNetworkRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("docker network %s: %w", shortID(req.NetworkID), errSwarm)
}

func (s *Server) freeNetwork(body []byte) (any, error) {
	var req api.FreeNetworkRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("docker network %s: %w", shortID(req.NetworkID), errSwarm)
}
