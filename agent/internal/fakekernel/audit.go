package fakekernel

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/resolvconf"
)

// The read side for reconcile and `netalias check` (agent.Auditor).

func (k *Kernel) HostLinks() (map[string]link.Info, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]link.Info{}
	for n, l := range k.s.Links {
		in := link.Info{Name: n, Kind: l.Kind, Master: l.Master, Group: l.Group, Up: l.Up}
		if l.MAC != "" {
			in.MAC, _ = net.ParseMAC(l.MAC)
		}
		out[n] = in
	}
	return out, nil
}

func (k *Kernel) NetnsLinks(nsPath string) ([]link.Info, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ifs, ok := k.s.Netns[nsPath]
	if !ok {
		return nil, &missingNetns{nsPath}
	}
	var out []link.Info
	for n, in := range ifs {
		i := link.Info{Name: n, Kind: "veth", Peer: in.HostPeer, Up: in.Up, Addrs: slices.Clone(in.Addrs)}
		if in.HostPeer == "" {
			i.Kind = "loopback"
		}
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b link.Info) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (k *Kernel) ReadResolver(name string) (resolvconf.Content, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := k.s.Resolv[name]
	if !ok {
		return resolvconf.Content{}, nil
	}
	ns, search, _ := strings.Cut(s, "; ")
	return resolvconf.Content{Exists: true, Ours: true, Nameserver: ns, Search: strings.Fields(search)}, nil
}

// SetResolver puts a resolver file in place as it is ("" content: the
// file is removed), as a crash or a user would leave it.
func (k *Kernel) SetResolver(name, nameserver string, search []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if nameserver == "" && search == nil {
		delete(k.s.Resolv, name)
		return
	}
	k.s.Resolv[name] = nameserver + "; " + strings.Join(search, " ")
}

// PutIface replaces (or, with ok false, removes) an interface inside a
// namespace, as a crash would leave it.
func (k *Kernel) PutIface(nsPath, name string, in Iface, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !ok {
		delete(k.s.Netns[nsPath], name)
		return
	}
	k.s.Netns[nsPath][name] = in
}

type missingNetns struct{ path string }

func (e *missingNetns) Error() string {
	return "open namespace " + e.path + ": no such file or directory"
}

func (k *Kernel) Plug(veth, bridge string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("Plug %s %s", veth, bridge); err != nil {
		return err
	}
	l, ok := k.s.Links[veth]
	if !ok {
		return fmt.Errorf("veth %s: link not found", veth)
	}
	if br, ok := k.s.Links[bridge]; !ok || br.Kind != "bridge" {
		return fmt.Errorf("bridge %s: link not found", bridge)
	}
	l.Master, l.Up = bridge, true
	k.s.Links[veth] = l
	return nil
}
