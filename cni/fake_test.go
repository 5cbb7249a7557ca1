package cni

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
)

// fakeBackend is a Backend without a kernel: its networks and
// attachments live in DIR/fake.json of the configuration's stateDir, so
// that successive plugin processes (as libcni runs them) share them, and
// the test reads back what each call asked for.
type fakeBackend struct {
	path string
	st   fakeState
}

type fakeState struct {
	Networks map[string]*fakeNet `json:"networks"`
	Calls    []fakeCall          `json:"calls,omitempty"`
}

type fakeNet struct {
	Subnet   string `json:"subnet"`
	Subnet6  string `json:"subnet6,omitempty"`
	Internal bool   `json:"internal,omitempty"`
	MTU      int    `json:"mtu,omitempty"`
	// Status is what STATUS answers: "", "unavailable", "degraded", "full",
	// "io"; "full" also makes ADD run out of addresses, "io" fail on I/O.
	Status string `json:"status,omitempty"`
	// Damage makes CHECK report this part missing.
	Damage      string     `json:"damage,omitempty"`
	Attachments []fakeAtt  `json:"attachments,omitempty"`
	Taken       []string   `json:"taken,omitempty"` // names of `netalias connect` endpoints
	Leases      []fakeAddr `json:"leases,omitempty"`
}

type fakeAddr struct{ Name, IPv4 string }

type fakeAtt struct {
	Key
	CNINetwork string   `json:"cni_network"`
	Netns      string   `json:"netns"`
	Name       string   `json:"name"`
	Aliases    []string `json:"aliases,omitempty"`
	IPv4       string   `json:"ipv4"`
	IPv6       string   `json:"ipv6,omitempty"`
	MAC        string   `json:"mac"`
}

type fakeCall struct {
	Op      string      `json:"op"`
	Network string      `json:"network"`
	Add     *AddRequest `json:"add,omitempty"`
	Key     *Key        `json:"key,omitempty"`
	Netns   string      `json:"netns,omitempty"`
	CNINet  string      `json:"cni_network,omitempty"`
	Keep    []Key       `json:"keep,omitempty"`
}

const fakeFile = "fake.json"

func openFake(dir string) (Backend, error) {
	f := &fakeBackend{path: filepath.Join(dir, fakeFile)}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &f.st); err != nil {
		return nil, fmt.Errorf("%s: %w", f.path, err)
	}
	return f, nil
}

func (f *fakeBackend) save() error {
	b, err := json.MarshalIndent(f.st, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(f.path, b, 0o644)
}

func (f *fakeBackend) record(c fakeCall) {
	f.st.Calls = append(f.st.Calls, c)
}

func (f *fakeBackend) net(name string) (*fakeNet, error) {
	n := f.st.Networks[name]
	if n == nil {
		return nil, fmt.Errorf("network %q not found in the state directory (create it with \"netalias network create %s\"): %w", name, name, ErrUnknownNetwork)
	}
	return n, nil
}

func (f *fakeBackend) Add(_ context.Context, req AddRequest) (*Attachment, error) {
	f.record(fakeCall{Op: "ADD", Network: req.Network, Add: &req})
	defer f.save()
	n, err := f.net(req.Network)
	if err != nil {
		return nil, err
	}
	if n.Status == "io" {
		return nil, fmt.Errorf("write %s: read-only file system: %w", f.path, ErrStateIO)
	}
	// As the agent: the key first; the same request again (a runtime
	// retrying an ADD whose answer it lost) gets the attachment back.
	var again *fakeAtt
	for i, a := range n.Attachments {
		if a.Key != req.Key {
			continue
		}
		taken := slices.Contains(n.Taken, req.Name) || slices.ContainsFunc(n.Attachments, func(o fakeAtt) bool { return o.Name == req.Name })
		name := a.Name == req.Name || (req.Fallback != "" && a.Name == req.Fallback && taken)
		if a.Netns != req.Netns || !name || !slices.Equal(a.Aliases, req.Aliases) {
			return nil, fmt.Errorf("attachment %s/%s already exists on network %q: %w", req.ContainerID, req.IfName, req.Network, ErrExists)
		}
		again = &n.Attachments[i]
	}
	if again != nil {
		req.Name = again.Name
		return f.attachment(n, req, netip.MustParseAddr(again.IPv4), again.IPv6), nil
	}
	if slices.Contains(n.Taken, req.Name) {
		return nil, fmt.Errorf("endpoint name %q is already in use on network %q: %w", req.Name, req.Network, ErrNameInUse)
	}
	for _, a := range n.Attachments {
		if a.Name == req.Name {
			return nil, fmt.Errorf("endpoint name %q is already in use on network %q: %w", req.Name, req.Network, ErrNameInUse)
		}
	}
	sub := netip.MustParsePrefix(n.Subnet)
	gw := sub.Addr().Next()
	used := map[netip.Addr]bool{gw: true}
	for _, a := range n.Attachments {
		used[netip.MustParseAddr(a.IPv4)] = true
	}
	ip := req.IPv4
	switch {
	case ip.IsValid() && !sub.Contains(ip):
		return nil, fmt.Errorf("address %s is outside network %q's subnet %s: %w", ip, req.Network, sub, ErrInvalid)
	case ip.IsValid() && used[ip]:
		return nil, fmt.Errorf("address %s is already in use on network %q: %w", ip, req.Network, ErrAddressInUse)
	case !ip.IsValid():
		for _, l := range n.Leases {
			if l.Name == req.Name && !used[netip.MustParseAddr(l.IPv4)] {
				ip = netip.MustParseAddr(l.IPv4)
			}
		}
		for a := gw.Next(); !ip.IsValid() && n.Status != "full" && sub.Contains(a); a = a.Next() {
			if !used[a] {
				ip = a
			}
		}
		if !ip.IsValid() {
			return nil, fmt.Errorf("network %q: %w in %s", req.Network, ErrNoFreeAddress, sub)
		}
	}
	var ip6 netip.Addr
	if n.Subnet6 != "" {
		sub6 := netip.MustParsePrefix(n.Subnet6)
		ip6 = req.IPv6
		if !ip6.IsValid() {
			ip6 = sub6.Addr().Next().Next()
			for _, a := range n.Attachments {
				if a.IPv6 == ip6.String() {
					ip6 = ip6.Next()
				}
			}
		}
	} else if req.IPv6.IsValid() {
		return nil, fmt.Errorf("IPv6 address %s asked for but network %q has no IPv6 subnet: %w", req.IPv6, req.Network, ErrInvalid)
	}
	var s6 string
	if ip6.IsValid() {
		s6 = ip6.String()
	}
	att := f.attachment(n, req, ip, s6)
	rec := fakeAtt{Key: req.Key, CNINetwork: req.CNINetwork, Netns: req.Netns, Name: req.Name, Aliases: req.Aliases, IPv4: ip.String(), IPv6: s6, MAC: att.MAC.String()}
	n.Attachments = append(n.Attachments, rec)
	n.Leases = append(n.Leases, fakeAddr{req.Name, ip.String()})
	return att, nil
}

// attachment is what an ADD of req at ip (and ip6, "" for none) answers.
func (f *fakeBackend) attachment(n *fakeNet, req AddRequest, ip netip.Addr, ip6 string) *Attachment {
	sub := netip.MustParsePrefix(n.Subnet)
	mac := req.MAC
	if mac == nil {
		mac = net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0}
		copy(mac[2:], ip.AsSlice())
	}
	h := sha256.Sum256([]byte(req.ContainerID + "/" + req.IfName))
	att := &Attachment{
		Network: req.Network, HostVeth: "nav" + hex.EncodeToString(h[:6]),
		HostMAC: net.HardwareAddr{0x02, 0, h[0], h[1], h[2], h[3]},
		IfName:  req.IfName, MAC: mac, MTU: n.MTU,
		IPv4: netip.PrefixFrom(ip, sub.Bits()), Gateway4: sub.Addr().Next(),
		DefaultRoute: !n.Internal,
	}
	if ip6 != "" {
		sub6 := netip.MustParsePrefix(n.Subnet6)
		att.IPv6, att.Gateway6 = netip.PrefixFrom(netip.MustParseAddr(ip6), sub6.Bits()), sub6.Addr().Next()
	}
	return att
}

func (f *fakeBackend) Del(_ context.Context, network string, key Key, netns string) error {
	f.record(fakeCall{Op: "DEL", Network: network, Key: &key, Netns: netns})
	defer f.save()
	n, err := f.net(network)
	if err != nil {
		return err
	}
	n.Attachments = slices.DeleteFunc(n.Attachments, func(a fakeAtt) bool { return a.Key == key })
	return nil
}

func (f *fakeBackend) Check(_ context.Context, network string, key Key, netns string) (*Attachment, error) {
	f.record(fakeCall{Op: "CHECK", Network: network, Key: &key, Netns: netns})
	defer f.save()
	n, err := f.net(network)
	if err != nil {
		return nil, err
	}
	for _, a := range n.Attachments {
		if a.Key != key {
			continue
		}
		if n.Damage != "" {
			return nil, fmt.Errorf("network %q: attachment %s/%s: %s is missing: %w", network, key.ContainerID, key.IfName, n.Damage, ErrDamaged)
		}
		sub := netip.MustParsePrefix(n.Subnet)
		mac, _ := net.ParseMAC(a.MAC)
		att := &Attachment{Network: network, IfName: a.IfName, MAC: mac, IPv4: netip.PrefixFrom(netip.MustParseAddr(a.IPv4), sub.Bits())}
		if a.IPv6 != "" {
			att.IPv6 = netip.PrefixFrom(netip.MustParseAddr(a.IPv6), netip.MustParsePrefix(n.Subnet6).Bits())
		}
		return att, nil
	}
	return nil, fmt.Errorf("network %q has no attachment %s/%s: %w", network, key.ContainerID, key.IfName, ErrNotAttached)
}

func (f *fakeBackend) GC(_ context.Context, network, cniNetwork string, keep []Key) error {
	f.record(fakeCall{Op: "GC", Network: network, CNINet: cniNetwork, Keep: keep})
	defer f.save()
	n, err := f.net(network)
	if err != nil {
		return err
	}
	n.Attachments = slices.DeleteFunc(n.Attachments, func(a fakeAtt) bool {
		return a.CNINetwork == cniNetwork && !slices.Contains(keep, a.Key)
	})
	return nil
}

func (f *fakeBackend) Status(_ context.Context, network string) error {
	f.record(fakeCall{Op: "STATUS", Network: network})
	defer f.save()
	n, err := f.net(network)
	if err != nil {
		return err
	}
	switch n.Status {
	case "unavailable":
		return fmt.Errorf("network %q: bridge na-x is gone and cannot be restored: %w", network, ErrUnavailable)
	case "degraded":
		return fmt.Errorf("network %q: firewall table missing: %w", network, ErrDegraded)
	case "full":
		return fmt.Errorf("network %q: %w in %s", network, ErrNoFreeAddress, n.Subnet)
	case "io":
		return fmt.Errorf("state directory %s is not writable: %w", filepath.Dir(f.path), ErrStateIO)
	}
	return nil
}
