package cluster

import "encoding/json"

// NetworkRecord is a cluster network (P/networks/<net>).
type NetworkRecord struct {
	Subnet   string `json:"subnet"`
	Subnet6  string `json:"subnet6,omitempty"`
	VNI      uint32 `json:"vni"`
	MTU      int    `json:"mtu,omitempty"`
	Internal bool   `json:"internal,omitempty"`
	// BlockBits is the prefix length of the address blocks hosts claim
	// (e.g. 26 for /26 in an IPv4 subnet).
	BlockBits int    `json:"block_bits"`
	Creator   string `json:"creator,omitempty"` // host that created it
}

// HostRecord announces a live host (P/hosts/<host>).
type HostRecord struct {
	// VTEP is the host's underlay address for VXLAN (part 2); may be empty.
	VTEP string `json:"vtep,omitempty"`
}

// GatewayRecord is a host's own gateway on a network (P/gateways/<host>/<net>).
type GatewayRecord struct {
	IPv4 string `json:"ipv4,omitempty"`
	IPv6 string `json:"ipv6,omitempty"`
	MAC  string `json:"mac,omitempty"`
}

// EndpointRecord is one endpoint (P/endpoints/<host>/<net>/<epid>).
type EndpointRecord struct {
	Name    string       `json:"name"`
	Aliases []string     `json:"aliases,omitempty"`
	Links   []LinkRecord `json:"links,omitempty"`
	IPv4    string       `json:"ipv4,omitempty"`
	IPv6    string       `json:"ipv6,omitempty"`
	MAC     string       `json:"mac,omitempty"`
	// Container is the container identity on its own host; readers on
	// other hosts qualify it with the host name.
	Container string `json:"container,omitempty"`
}

// LinkRecord is a legacy --link of an endpoint.
type LinkRecord struct {
	Target string `json:"target"`
	Alias  string `json:"alias"`
}

// mustJSON encodes a record type, which cannot fail.
func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
