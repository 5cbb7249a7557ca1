package cluster

import (
	"strconv"
	"strings"
)

// Keys is the key layout under one prefix (default /netalias/v1). Values
// are JSON (the record types in records.go) unless noted.
//
//	P/networks/<net>                 NetworkRecord    no lease
//	P/vni/<vni>                      "<net>" (text)   no lease (part 2: VXLAN)
//	P/hosts/<host>                   HostRecord       host lease
//	P/gateways/<host>/<net>          GatewayRecord    host lease
//	P/endpoints/<host>/<net>/<epid>  EndpointRecord   host lease
//	P/ipam/<net>/blocks/<cidr>       "<host>" (text)  host IPAM lease
//
// Host first under hosts/, gateways/ and endpoints/: one prefix per host
// (per-host RBAC, one prefix delete on leave), and everything under the
// host lease goes in one revision when the lease expires.
type Keys struct{ Prefix string }

func (k Keys) p(parts ...string) string {
	return k.Prefix + "/" + strings.Join(parts, "/")
}

// Root is the prefix of every key.
func (k Keys) Root() string { return k.Prefix + "/" }

// Networks is the prefix of every network record.
func (k Keys) Networks() string { return k.p("networks", "") }

// Network is the record of network net.
func (k Keys) Network(net string) string { return k.p("networks", net) }

// VNIs is the prefix of the VNI reservations.
func (k Keys) VNIs() string { return k.p("vni", "") }

// VNI is the reservation of one VXLAN network identifier.
func (k Keys) VNI(vni uint32) string { return k.p("vni", strconv.FormatUint(uint64(vni), 10)) }

// Hosts is the prefix of every host record.
func (k Keys) Hosts() string { return k.p("hosts", "") }

// Host is host's record (VTEP address for part 2).
func (k Keys) Host(host string) string { return k.p("hosts", host) }

// Gateways is the prefix of every gateway record.
func (k Keys) Gateways() string { return k.p("gateways", "") }

// HostGateways is the prefix of host's gateway records.
func (k Keys) HostGateways(host string) string { return k.p("gateways", host, "") }

// Gateway is host's gateway address record on network net.
func (k Keys) Gateway(host, net string) string { return k.p("gateways", host, net) }

// Endpoints is the prefix of every endpoint record.
func (k Keys) Endpoints() string { return k.p("endpoints", "") }

// HostEndpoints is the prefix of host's endpoint records.
func (k Keys) HostEndpoints(host string) string { return k.p("endpoints", host, "") }

// Endpoint is one endpoint record.
func (k Keys) Endpoint(host, net, epid string) string { return k.p("endpoints", host, net, epid) }

// Blocks is the prefix of network net's address blocks.
func (k Keys) Blocks(net string) string { return k.p("ipam", net, "blocks", "") }

// Block is one address block of network net; cidr is e.g. 10.0.0.64/26
// (the "/" of the CIDR is part of the last key element).
func (k Keys) Block(net, cidr string) string { return k.p("ipam", net, "blocks", cidr) }

// IPAM is the prefix of network net's address management keys.
func (k Keys) IPAM(net string) string { return k.p("ipam", net, "") }

// Kind names what a key under the root is.
type Kind int

const (
	KindOther Kind = iota
	KindNetwork
	KindVNI
	KindHost
	KindGateway
	KindEndpoint
	KindBlock
)

// Parsed is a key split into its parts.
type Parsed struct {
	Kind  Kind
	Host  string
	Net   string
	ID    string // endpoint id, VNI, or block CIDR
	Valid bool
}

// Parse splits a key of this layout. Unknown keys come back with Kind
// KindOther.
func (k Keys) Parse(key string) Parsed {
	rest, ok := strings.CutPrefix(key, k.Root())
	if !ok {
		return Parsed{}
	}
	kind, rest, _ := strings.Cut(rest, "/")
	parts := strings.Split(rest, "/")
	switch {
	case kind == "networks" && len(parts) == 1 && parts[0] != "":
		return Parsed{Kind: KindNetwork, Net: parts[0], Valid: true}
	case kind == "vni" && len(parts) == 1 && parts[0] != "":
		return Parsed{Kind: KindVNI, ID: parts[0], Valid: true}
	case kind == "hosts" && len(parts) == 1 && parts[0] != "":
		return Parsed{Kind: KindHost, Host: parts[0], Valid: true}
	case kind == "gateways" && len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return Parsed{Kind: KindGateway, Host: parts[0], Net: parts[1], Valid: true}
	case kind == "endpoints" && len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != "":
		return Parsed{Kind: KindEndpoint, Host: parts[0], Net: parts[1], ID: parts[2], Valid: true}
	case kind == "ipam" && len(parts) == 4 && parts[1] == "blocks":
		return Parsed{Kind: KindBlock, Net: parts[0], ID: parts[2] + "/" + parts[3], Valid: true}
	}
	return Parsed{}
}
