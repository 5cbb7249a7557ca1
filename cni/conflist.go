package cni

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/containernetworking/cni/pkg/utils"

	"github.com/netalias/netalias/agent/names"
	"github.com/netalias/netalias/state"
)

// DefaultConflistVersion is the cniVersion of a generated conflist unless
// asked otherwise: the newest that Podman 4.3, containerd 1.6 and Debian's
// reference plugins (containernetworking-plugins 1.1) all accept. Runtimes
// that speak 1.1.0 can ask for it to get GC and STATUS.
const DefaultConflistVersion = "1.0.0"

// chainable are the reference plugins a conflist may chain after netalias,
// with the capabilities each takes from the runtime.
var chainable = map[string]map[string]bool{
	"portmap":   {"portMappings": true},
	"tuning":    nil,
	"bandwidth": {"bandwidth": true},
	"firewall":  nil,
}

// ConflistOptions describes a conflist for a netalias network.
type ConflistOptions struct {
	Network    string   // the netalias network (made by `netalias network create`)
	Name       string   // the CNI network name runtimes know it by; default Network
	StateDir   string   // default /var/lib/netalias
	CNIVersion string   // default DefaultConflistVersion
	Plugins    []string // reference plugins chained after netalias: portmap, tuning, bandwidth, firewall
}

// Conflist returns a ready .conflist for a netalias network: netalias
// first (it makes the interface), then the chained plugins in order.
func Conflist(o ConflistOptions) ([]byte, error) {
	if err := names.Label("network name", o.Network); err != nil {
		return nil, err
	}
	if o.Name == "" {
		o.Name = o.Network
	} else if err := utils.ValidateNetworkName(o.Name); err != nil {
		return nil, fmt.Errorf("CNI network name %q: %v", o.Name, err)
	}
	if o.StateDir == "" {
		o.StateDir = state.DefaultDir
	} else if !filepath.IsAbs(o.StateDir) {
		return nil, fmt.Errorf("state directory %q is not an absolute path (runtimes run the plugin from anywhere)", o.StateDir)
	}
	if o.CNIVersion == "" {
		o.CNIVersion = DefaultConflistVersion
	} else if !slices.Contains(Versions.SupportedVersions(), o.CNIVersion) {
		return nil, fmt.Errorf("CNI version %q is not one netalias speaks (%v)", o.CNIVersion, Versions.SupportedVersions())
	}
	type plugin struct {
		Type         string          `json:"type"`
		Network      string          `json:"network,omitempty"`
		StateDir     string          `json:"stateDir,omitempty"`
		Capabilities map[string]bool `json:"capabilities,omitempty"`
	}
	list := struct {
		CNIVersion string   `json:"cniVersion"`
		Name       string   `json:"name"`
		Plugins    []plugin `json:"plugins"`
	}{CNIVersion: o.CNIVersion, Name: o.Name}
	list.Plugins = append(list.Plugins, plugin{
		Type: "netalias", Network: o.Network, StateDir: o.StateDir,
		Capabilities: map[string]bool{"aliases": true, "ips": true, "mac": true},
	})
	seen := map[string]bool{}
	for _, t := range o.Plugins {
		caps, ok := chainable[t]
		if !ok {
			return nil, fmt.Errorf("plugin %q cannot be chained by this command (known: bandwidth, firewall, portmap, tuning)", t)
		}
		if seen[t] {
			return nil, fmt.Errorf("plugin %q given twice", t)
		}
		seen[t] = true
		list.Plugins = append(list.Plugins, plugin{Type: t, Capabilities: caps})
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
