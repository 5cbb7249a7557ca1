package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/netalias/netalias/state"
)

// StateDirDesired returns a DesiredFunc reading the agent's state
// directory: every endpoint of every network file, and the network's
// gateway as this host's gateway on it. include, when not nil, selects the
// networks to publish (cluster networks only, say).
func StateDirDesired(dir string, host HostRecord, include func(f *state.File) bool) DesiredFunc {
	return func() (*Desired, error) {
		d := &Desired{Host: host, Gateways: map[string]GatewayRecord{}, Endpoints: map[EndpointID]EndpointRecord{}}
		nd := state.NetworksPath(dir)
		ents, err := os.ReadDir(nd)
		if errors.Is(err, fs.ErrNotExist) {
			return d, nil
		}
		if err != nil {
			return nil, fmt.Errorf("state directory %s: %w", nd, err)
		}
		for _, e := range ents {
			p := filepath.Join(nd, e.Name())
			if e.IsDir() || state.NetworkNameFromPath(p) == "" {
				continue
			}
			f, err := state.Read(p)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since the listing
			}
			if err != nil {
				// A half-understood file must not withdraw its endpoints
				// from the cluster: fail this sync, keep what is published.
				return nil, err
			}
			if include == nil || include(f) {
				addStateFile(d, f)
			}
		}
		return d, nil
	}
}

// addStateFile adds one network file's gateway and endpoints to d.
func addStateFile(d *Desired, f *state.File) {
	n := f.Network.Name
	if f.Network.Gateway.IsValid() || f.Network.Gateway6.IsValid() {
		d.Gateways[n] = GatewayRecord{IPv4: addrString(f.Network.Gateway), IPv6: addrString(f.Network.Gateway6)}
	}
	for _, ep := range f.Endpoints {
		if ep.ID == "" || CheckName("endpoint", ep.ID) != nil {
			continue
		}
		r := EndpointRecord{Name: ep.Name, Aliases: ep.Aliases, IPv4: addrString(ep.IPv4), IPv6: addrString(ep.IPv6), MAC: ep.MAC, Container: ep.Container}
		if r.Container == "" {
			r.Container = ep.Netns
		}
		for _, l := range ep.Links {
			r.Links = append(r.Links, LinkRecord{Target: l.Target, Alias: l.Alias})
		}
		d.Endpoints[EndpointID{Net: n, ID: ep.ID}] = r
	}
}

// addrString is the record form of an address: "" when absent.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
