package dockerdriver

import (
	"errors"
	"net"
	"net/netip"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/state"
)

// AgentBackend is the Backend of `netalias docker-plugin`: the agent's
// Manager (agent/docker.go does the work; this only translates types and
// errors).
type AgentBackend struct{ M *agent.Manager }

var _ Backend = AgentBackend{}

// notFound marks an agent "not found" as the driver's ErrNotFound, keeping
// the agent's message.
type notFound struct{ error }

func (e notFound) Is(target error) bool { return target == ErrNotFound }
func (e notFound) Unwrap() error        { return e.error }

func mapErr(err error) error {
	if err != nil && errors.Is(err, agent.ErrNotFound) {
		return notFound{err}
	}
	return err
}

func infoOf(n *state.Network) NetworkInfo {
	return NetworkInfo{Name: n.Name, Subnet: n.Subnet, Gateway: n.Gateway, Subnet6: n.Subnet6, Gateway6: n.Gateway6, Internal: n.Internal}
}

func (b AgentBackend) Network(name string) (NetworkInfo, error) {
	n, err := b.M.DockerNetwork(name)
	if err != nil {
		return NetworkInfo{}, mapErr(err)
	}
	return infoOf(n), nil
}

func (b AgentBackend) ChooseSubnet(v6 bool, avoid []netip.Prefix) (netip.Prefix, error) {
	return b.M.DockerChooseSubnet(v6, avoid)
}

func (b AgentBackend) CreateNetwork(spec NetworkSpec) (NetworkInfo, error) {
	s := agent.NetworkSpec{Name: spec.Name, Subnet: spec.Subnet.String(), Internal: spec.Internal, MTU: spec.MTU}
	if spec.Gateway.IsValid() {
		s.Gateway = spec.Gateway.String()
	}
	if spec.Subnet6.IsValid() {
		s.IPv6, s.Subnet6 = true, spec.Subnet6.String()
		if spec.Gateway6.IsValid() {
			s.Gateway6 = spec.Gateway6.String()
		}
	}
	n, err := b.M.CreateNetwork(s)
	if err != nil {
		return NetworkInfo{}, err
	}
	return infoOf(n), nil
}

func (b AgentBackend) RemoveNetwork(name string) error {
	return mapErr(b.M.DockerRemoveNetwork(name))
}

func (b AgentBackend) AllocAddress(network string, v6 bool, want netip.Addr) (netip.Addr, error) {
	a, err := b.M.DockerReserve(network, v6, want)
	return a, mapErr(err)
}

func (b AgentBackend) ReleaseAddress(network string, addr netip.Addr) error {
	return mapErr(b.M.DockerRelease(network, addr))
}

func (b AgentBackend) CreateEndpoint(spec EndpointSpec) (EndpointInfo, error) {
	ep, err := b.M.DockerCreateEndpoint(agent.DockerEndpointSpec{Network: spec.Network, EndpointID: spec.EndpointID,
		DockerNetwork: spec.DockerID, IPv4: spec.IPv4, IPv6: spec.IPv6, MAC: spec.MAC})
	if err != nil {
		return EndpointInfo{}, mapErr(err)
	}
	info := EndpointInfo{HostVeth: ep.HostVeth}
	if spec.MAC != nil {
		info.MAC = spec.MAC
	} else if mac, err := net.ParseMAC(ep.MAC); err == nil {
		info.MAC = mac
	}
	return info, nil
}

func (b AgentBackend) DeleteEndpoint(network, endpointID string) error {
	return mapErr(b.M.DockerDeleteEndpoint(network, endpointID))
}

func (b AgentBackend) Join(network, endpointID, sandboxKey string) (string, error) {
	p, err := b.M.DockerJoin(network, endpointID, sandboxKey)
	return p, mapErr(err)
}

func (b AgentBackend) Leave(network, endpointID string) error {
	return mapErr(b.M.DockerLeave(network, endpointID))
}
