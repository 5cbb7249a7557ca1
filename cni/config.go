package cni

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netalias/netalias/agent/names"
	"github.com/netalias/netalias/state"
)

// Config is netalias's entry in a conflist, with what the runtime injects.
//
//	{"type": "netalias", "network": "testnet", "stateDir": "/var/lib/netalias",
//	 "capabilities": {"aliases": true, "ips": true, "mac": true}}
//
// Unknown keys are ignored, as the spec asks of plugins.
type Config struct {
	types.PluginConf // never marshal a Config: PluginConf's MarshalJSON would drop the fields below

	// Network names a network made by `netalias network create`; ADD never
	// creates one (a "subnet" key is refused).
	Network string `json:"network"`
	// StateDir is the agent's state directory; default /var/lib/netalias.
	StateDir string `json:"stateDir,omitempty"`
	// Subnet is read only to refuse it with a clear message.
	Subnet string `json:"subnet,omitempty"`

	RuntimeConfig RuntimeConfig `json:"runtimeConfig,omitempty"`

	// Attachments is the older spelling of cni.dev/valid-attachments
	// (cni#1101); libcni sends both, older runtimes only this one.
	Attachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// RuntimeConfig holds the capability arguments netalias reads.
type RuntimeConfig struct {
	// Aliases is a list of names, or Podman's map from network name to a
	// list of names.
	Aliases json.RawMessage `json:"aliases,omitempty"`
	IPs     []string        `json:"ips,omitempty"` // "10.1.0.5" or "10.1.0.5/24"
	MAC     string          `json:"mac,omitempty"`
}

// ParseConfig decodes and validates the configuration on stdin. Errors
// carry the spec's codes: 6 for bad JSON, 7 for a bad configuration.
func ParseConfig(data []byte) (*Config, *types.Error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("netalias: cannot decode the network configuration: %v", err), "")
	}
	bad := func(format string, a ...any) (*Config, *types.Error) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "netalias: "+fmt.Sprintf(format, a...), "")
	}
	if c.Network == "" {
		return bad(`configuration of CNI network %q lacks the key "network": the netalias network to attach to (create one with "netalias network create NAME")`, c.Name)
	}
	if err := names.Label("network", c.Network); err != nil {
		return bad(`key "network": %v`, err)
	}
	if c.Subnet != "" {
		return bad(`key "subnet" is not supported: the plugin does not create networks; create it with "netalias network create --subnet %s %s" and drop the key`, c.Subnet, c.Network)
	}
	if c.IPAM.Type != "" {
		return bad(`key "ipam" (type %q) is not supported: netalias allocates addresses from network %q itself; drop the key`, c.IPAM.Type, c.Network)
	}
	if c.StateDir == "" {
		c.StateDir = state.DefaultDir
	} else if !filepath.IsAbs(c.StateDir) {
		return bad(`key "stateDir" %q is not an absolute path`, c.StateDir)
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("netalias: prevResult of CNI network %q: %v", c.Name, err), "")
	}
	return &c, nil
}

// keep is the GC's list of valid attachments, from both spellings.
func (c *Config) keep() []Key {
	seen := map[Key]bool{}
	var out []Key
	for _, list := range [][]types.GCAttachment{c.ValidAttachments, c.Attachments} {
		for _, a := range list {
			k := Key{ContainerID: a.ContainerID, IfName: a.IfName}
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}

// cniArgs is what netalias reads from CNI_ARGS; other keys are ignored
// (runtimes pass K8S_POD_NAMESPACE, IgnoreUnknown and more).
type cniArgs struct {
	PodName string   // K8S_POD_NAME (Podman: the container name)
	IPs     []string // IP=, comma-separated as host-local reads it
	MAC     string   // MAC=
}

func parseArgs(s string) (cniArgs, *types.Error) {
	var a cniArgs
	if s == "" {
		return a, nil
	}
	for _, pair := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return a, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("netalias: CNI_ARGS: %q is not KEY=VALUE", pair), "")
		}
		switch k {
		case "K8S_POD_NAME":
			a.PodName = v
		case "IP":
			for _, ip := range strings.Split(v, ",") {
				if ip = strings.TrimSpace(ip); ip != "" {
					a.IPs = append(a.IPs, ip)
				}
			}
		case "MAC":
			a.MAC = v
		}
	}
	return a, nil
}

// staticAddrs parses the addresses asked for: at most one per family.
// where names their source in errors.
func staticAddrs(where string, list []string) (v4, v6 netip.Addr, err error) {
	for _, s := range list {
		a, perr := netip.ParseAddr(s)
		if perr != nil {
			p, perr2 := netip.ParsePrefix(s)
			if perr2 != nil {
				return v4, v6, fmt.Errorf("%s: %q is not an IP address", where, s)
			}
			a = p.Addr()
		}
		a = a.Unmap()
		slot := &v6
		if a.Is4() {
			slot = &v4
		}
		if slot.IsValid() {
			return v4, v6, fmt.Errorf("%s: more than one IPv%d address (%s, %s): an attachment has one per family", where, map[bool]int{true: 4, false: 6}[a.Is4()], *slot, a)
		}
		*slot = a
	}
	return v4, v6, nil
}

// parseMAC accepts a unicast Ethernet address.
func parseMAC(where, s string) (net.HardwareAddr, error) {
	m, err := net.ParseMAC(s)
	if err != nil || len(m) != 6 {
		return nil, fmt.Errorf("%s: %q is not an Ethernet MAC address", where, s)
	}
	if m[0]&1 != 0 {
		return nil, fmt.Errorf("%s: %s is a multicast address", where, m)
	}
	if string(m) == "\x00\x00\x00\x00\x00\x00" {
		return nil, fmt.Errorf("%s: %s is the zero address", where, m)
	}
	return m, nil
}
