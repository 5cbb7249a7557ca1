package dockerdriver

import (
	"errors"
	"net"
	"net/netip"
)

// ErrNotFound is what a Backend returns (possibly wrapped) for a network or
// endpoint it does not have. The driver treats it as "already gone" where
// Docker's call is a removal, so removals stay idempotent.
var ErrNotFound = errors.New("not found")

// Backend is the netalias agent as the driver needs it. The driver speaks
// Docker's protocol, keeps the Docker-ID map and the pools Docker holds;
// the backend owns everything netalias records (networks, address
// reservations, endpoints) and the kernel. Every method is called from an
// HTTP handler while dockerd waits for the answer: it must never call the
// Docker API (dockerd holds locks across driver calls; a call back into it
// deadlocks the daemon). Methods may be called concurrently.
type Backend interface {
	// Network describes the netalias network called name; ErrNotFound when
	// there is none.
	Network(name string) (NetworkInfo, error)

	// ChooseSubnet picks a free subnet for a network that does not exist
	// yet (Docker asks for a pool before it creates the network): one that
	// overlaps no netalias network and none of avoid, the pools already
	// handed to Docker for networks still being created. IPv4 from the
	// agent's address pools; IPv6 as `netalias network create --ipv6`
	// chooses. Reserves nothing: CreateNetwork does.
	ChooseSubnet(v6 bool, avoid []netip.Prefix) (netip.Prefix, error)

	// CreateNetwork creates a netalias network exactly as specified (the
	// subnets and gateways come from the driver's own IPAM answers). On
	// error nothing is left behind.
	CreateNetwork(spec NetworkSpec) (NetworkInfo, error)

	// RemoveNetwork removes a network the driver created. ErrNotFound when
	// it is already gone. It fails, changing nothing, while the network
	// has endpoints that are not Docker's (say, `netalias connect`).
	RemoveNetwork(name string) error

	// AllocAddress reserves an address on the network for a Docker
	// endpoint that does not exist yet (Docker's IPAM RequestAddress comes
	// before CreateEndpoint): want when valid (an error if taken, the
	// gateway, or outside the subnet), else a free one of the family v6
	// says. The reservation is recorded so agent, CNI and Docker members
	// never collide, and holds until ReleaseAddress.
	AllocAddress(network string, v6 bool, want netip.Addr) (netip.Addr, error)

	// ReleaseAddress frees a reservation made by AllocAddress. Releasing
	// an address that is not reserved, or on a network that is gone, is
	// not an error.
	ReleaseAddress(network string, addr netip.Addr) error

	// CreateEndpoint records the endpoint under Docker's endpoint ID with
	// the addresses Docker gives (reserved by AllocAddress) and makes both
	// ends of its veth pair in the host namespace: the host end on the
	// network's bridge, the peer left down and unconfigured for Docker to
	// move into the container, rename and address. A nil spec.MAC means
	// the backend chooses one (and returns it). On error nothing is left
	// behind.
	CreateEndpoint(spec EndpointSpec) (EndpointInfo, error)

	// DeleteEndpoint removes the endpoint's record and its veth (the
	// background reaper may finish the kernel deletion). Its address
	// reservation stays until ReleaseAddress, which Docker sends next.
	// ErrNotFound when it is already gone.
	DeleteEndpoint(network, endpointID string) error

	// Join records the sandbox (the container's namespace path, which may
	// not exist yet) and returns the name of the veth peer in the host
	// namespace that Docker moves in.
	Join(network, endpointID, sandboxKey string) (peerName string, err error)

	// Leave is the reverse of Join; the veth stays until DeleteEndpoint.
	// ErrNotFound when the endpoint is gone.
	Leave(network, endpointID string) error
}

// NetworkInfo is what the driver needs to know of a netalias network.
type NetworkInfo struct {
	Name     string
	Subnet   netip.Prefix
	Gateway  netip.Addr
	Subnet6  netip.Prefix // zero unless dual-stack
	Gateway6 netip.Addr
	Internal bool
}

// NetworkSpec asks the backend for a new netalias network.
type NetworkSpec struct {
	Name     string
	Subnet   netip.Prefix
	Gateway  netip.Addr
	Subnet6  netip.Prefix // zero: IPv4 only
	Gateway6 netip.Addr
	Internal bool
	MTU      int // 0: the backend's default
	// DockerID is the Docker network the netalias network is made for,
	// for the backend's records and messages.
	DockerID string
}

// EndpointSpec asks the backend for a Docker endpoint.
type EndpointSpec struct {
	Network    string
	EndpointID string     // Docker's endpoint ID (64 hex)
	DockerID   string     // Docker's network ID
	IPv4       netip.Addr // from AllocAddress; zero on a network without IPv4
	IPv6       netip.Addr // zero unless the Docker network has --ipv6
	MAC        net.HardwareAddr
}

// EndpointInfo is what the backend made for an endpoint.
type EndpointInfo struct {
	HostVeth string           // on the bridge
	MAC      net.HardwareAddr // of the peer, the container's interface
}
