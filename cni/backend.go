package cni

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// Key identifies a CNI attachment, as the spec does: the container ID and
// the interface name inside it. One container may hold several attachments
// to the same network under different interface names.
type Key struct {
	ContainerID string
	IfName      string
}

// AddRequest is an ADD, parsed and checked: every name in it is a valid DNS
// name, the addresses are of their family.
type AddRequest struct {
	Network    string // netalias network (the config's "network"); it exists or the backend returns ErrUnknownNetwork
	CNINetwork string // the CNI network name (the config's "name"): record it, GC is scoped to it
	Key
	Netns string // CNI_NETNS, a path
	Name  string // endpoint name, a DNS label: K8S_POD_NAME, else the short container ID
	// Fallback is the short container ID when Name is the pod name: the
	// name the plugin retries under when Name is taken, so a retried ADD
	// finds an attachment made under it.
	Fallback string
	Aliases  []string // DNS names, deduplicated, never equal to Name
	// Static addresses asked for (ips capability or IP= argument); the
	// zero Addr means "allocate" (sticky by Name, as connect does).
	IPv4, IPv6 netip.Addr
	MAC        net.HardwareAddr // container-side MAC asked for; nil means the backend's choice
}

// Attachment is what an ADD made, as the Result reports it.
type Attachment struct {
	Network  string           // netalias network name: the Result's dns search domain
	HostVeth string           // host-side veth, on the network's bridge
	HostMAC  net.HardwareAddr // its MAC
	IfName   string           // container-side interface (CNI_IFNAME)
	MAC      net.HardwareAddr // its MAC
	MTU      int
	// Container addresses with the subnet's prefix length; IPv6 is the zero
	// Prefix on a single-stack network.
	IPv4, IPv6         netip.Prefix
	Gateway4, Gateway6 netip.Addr // the network's gateways; Gateway4 is the Result's nameserver
	// DefaultRoute tells whether default routes via the gateways were
	// installed (as connect does: not on internal networks, not when the
	// container already has one through another network).
	DefaultRoute bool
}

// Backend is what the plugin needs from the agent. Each method runs in a
// short-lived plugin process; implementations take the state directory's
// lock themselves. Errors wrap the sentinels below (with %w) so the plugin
// can answer with the spec's codes; a *types.Error returned as is passes
// through unchanged.
type Backend interface {
	// Add attaches req.Netns to the network under req.IfName. An ADD that
	// repeats a whole attachment's Key and request (a runtime retrying an
	// ADD whose plugin died after the commit) gets that attachment back,
	// also when it was made under req.Fallback and req.Name is still
	// taken.
	// An existing interface of that name in the namespace, or an
	// attachment with that Key made for another request or left damaged,
	// fails with ErrExists and changes nothing. A name
	// already used by another endpoint of the network fails with
	// ErrNameInUse (the plugin then retries once under the short ID).
	Add(ctx context.Context, req AddRequest) (*Attachment, error)
	// Del removes the attachment key of network: its veth, addresses,
	// state record (its lease stays, as with disconnect). It returns nil
	// when there is no such attachment, and works with netns empty or
	// gone (DEL may come after the namespace was deleted).
	Del(ctx context.Context, network string, key Key, netns string) error
	// Check verifies that the attachment is whole: state record, host veth
	// on the bridge and up, the container's addresses and MAC, its default
	// route when DefaultRoute, the network's firewall rules. It returns the
	// attachment as recorded (the plugin compares it with prevResult), or
	// an error naming what is missing (ErrNotAttached when there is no
	// record at all, ErrDamaged otherwise).
	Check(ctx context.Context, network string, key Key, netns string) (*Attachment, error)
	// GC removes every attachment of network that was made through the
	// CNI network cniNetwork and whose key is not in keep, continuing past
	// errors (joined). Endpoints made by `netalias connect`/`run`, and
	// attachments made through other CNI networks, are never touched.
	GC(ctx context.Context, network, cniNetwork string, keep []Key) error
	// Status returns nil when an ADD to network can be served, else an
	// error wrapping ErrUnavailable (state directory unwritable, bridge
	// gone and not restorable, no free address: ErrNoFreeAddress and
	// ErrUnknownNetwork count too) or ErrDegraded (existing attachments
	// may have lost connectivity too).
	Status(ctx context.Context, network string) error
}

// Open returns the backend serving the state directory of a
// configuration (its "stateDir", defaulted).
type Open func(stateDir string) (Backend, error)

// Sentinel errors a Backend wraps; the plugin maps them to codes (see
// codeFor and the package documentation).
var (
	ErrUnknownNetwork = errors.New("no such network")
	ErrNoFreeAddress  = errors.New("no free address")
	ErrAddressInUse   = errors.New("address already in use")
	ErrNameInUse      = errors.New("endpoint name already in use")
	ErrExists         = errors.New("already exists")
	ErrInvalid        = errors.New("invalid request")
	ErrNetns          = errors.New("unusable network namespace")
	ErrNotAttached    = errors.New("not attached")
	ErrDamaged        = errors.New("attachment damaged")
	ErrStateIO        = errors.New("state directory I/O failed")
	ErrBusy           = errors.New("busy")
	ErrUnavailable    = errors.New("network cannot serve ADD")
	ErrDegraded       = errors.New("network degraded")
)
