package fakekernel

import (
	"fmt"

	"github.com/netalias/netalias/agent/link"
)

// Pairs: veth pairs with both ends in the host namespace (the Docker
// driver's). The peer is a host link too, its Peer naming the host end
// with an empty Netns; deleting either end deletes both.

func (k *Kernel) CreatePair(p link.Pair) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("CreatePair %s", p.HostName); err != nil {
		return err
	}
	if br, ok := k.s.Links[p.Bridge]; !ok || br.Kind != "bridge" {
		return fmt.Errorf("bridge %s: link not found", p.Bridge)
	}
	for _, n := range []string{p.HostName, p.PeerName} {
		if _, ok := k.s.Links[n]; ok {
			return fmt.Errorf("create veth %s/%s: an interface with that name exists", p.HostName, p.PeerName)
		}
	}
	k.s.Links[p.HostName] = Link{Kind: "veth", MTU: p.MTU, Master: p.Bridge, Up: true, Peer: Peer{Name: p.PeerName}}
	k.s.Links[p.PeerName] = Link{Kind: "veth", MTU: p.MTU, Peer: Peer{Name: p.HostName}}
	return nil
}

func (k *Kernel) UnplugHost(host string, group uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.call("UnplugHost %s", host); err != nil {
		return err
	}
	l, ok := k.s.Links[host]
	if !ok {
		return nil
	}
	l.Up, l.Master, l.Group = false, "", group
	k.s.Links[host] = l
	return nil
}

// MovePeer moves a host-namespace peer into namespace nsPath as ifname,
// as Docker does at Join (nsPath must exist: AddNetns).
func (k *Kernel) MovePeer(peer, nsPath, ifname string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	pl, ok := k.s.Links[peer]
	if !ok {
		return fmt.Errorf("%s: link not found", peer)
	}
	ifs, ok := k.s.Netns[nsPath]
	if !ok {
		return fmt.Errorf("namespace %s: no such file or directory", nsPath)
	}
	host := pl.Peer.Name
	delete(k.s.Links, peer)
	ifs[ifname] = Iface{HostPeer: host, Up: true}
	hl := k.s.Links[host]
	hl.Peer = Peer{Netns: nsPath, Name: ifname}
	k.s.Links[host] = hl
	return nil
}
