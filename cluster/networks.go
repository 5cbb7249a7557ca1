package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// VNI range for cluster networks (as Docker's overlay: 4096 … 2²⁴−1; the
// lower ones are left to other VXLAN users).
const (
	MinVNI = 4096
	MaxVNI = 1<<24 - 1
)

// DefaultBlockBits is the size of the address blocks hosts claim in an
// IPv4 network (/26: 64 addresses).
const DefaultBlockBits = 26

// NetworkSpec is what `network create` asks for in cluster mode.
type NetworkSpec struct {
	Name     string
	Subnet   netip.Prefix // zero: chosen by ChooseSubnet
	Subnet6  netip.Prefix // zero: no IPv6
	MTU      int
	Internal bool
	// BlockBits is the per-host block size; 0 means DefaultBlockBits, or the
	// subnet itself when it is smaller than that.
	BlockBits int
	// ChooseSubnet picks a subnet overlapping nothing in taken (every
	// cluster network's subnets plus LocalTaken); the agent passes
	// ipam.AllocSubnet with its pools. Required when Subnet is zero.
	ChooseSubnet func(taken []netip.Prefix) (netip.Prefix, error)
	// LocalTaken is what this host uses besides cluster networks (routes).
	LocalTaken []netip.Prefix
}

// ErrNetworkConflict means the network exists in the cluster with other
// properties than asked for.
var ErrNetworkConflict = errors.New("network exists in the cluster with another subnet")

// ErrNetworkInUse means endpoints on some host are still on the network.
var ErrNetworkInUse = errors.New("network has active endpoints")

// ErrNoNetwork means the cluster has no such network.
var ErrNoNetwork = errors.New("no such cluster network")

// Networks creates, finds and removes cluster networks.
type Networks struct {
	cli  *clientv3.Client
	keys Keys
	host string
}

// NewNetworks returns the cluster network registry.
func NewNetworks(cli *clientv3.Client, keys Keys, host string) *Networks {
	return &Networks{cli: cli, keys: keys, host: host}
}

// List returns every cluster network by name.
func (n *Networks) List(ctx context.Context) (map[string]NetworkRecord, error) {
	m, _, err := n.list(ctx)
	return m, err
}

func (n *Networks) list(ctx context.Context) (map[string]NetworkRecord, int64, error) {
	resp, err := n.cli.Get(ctx, n.keys.Networks(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: list networks: %w", err)
	}
	out := make(map[string]NetworkRecord, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		p := n.keys.Parse(string(kv.Key))
		if p.Kind != KindNetwork {
			continue
		}
		var r NetworkRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, 0, fmt.Errorf("cluster: network %s: bad record in etcd: %w", p.Net, err)
		}
		out[p.Net] = r
	}
	return out, resp.Header.Revision, nil
}

// Get returns one network; ErrNoNetwork when absent.
func (n *Networks) Get(ctx context.Context, name string) (NetworkRecord, error) {
	resp, err := n.cli.Get(ctx, n.keys.Network(name))
	if err != nil {
		return NetworkRecord{}, fmt.Errorf("cluster: network %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return NetworkRecord{}, fmt.Errorf("cluster: network %s: %w", name, ErrNoNetwork)
	}
	var r NetworkRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return NetworkRecord{}, fmt.Errorf("cluster: network %s: bad record in etcd: %w", name, err)
	}
	return r, nil
}

// Create makes network spec.Name in the cluster in one compare-and-swap
// transaction: the network key is absent, no network was added or changed
// since the subnet was chosen against all of them, and the VNI is free.
// When the network already exists with compatible properties (same subnet
// if one was given), it returns it with created false: the caller joins
// it. Two hosts racing with different subnets: exactly one wins; the other
// gets ErrNetworkConflict.
func (n *Networks) Create(ctx context.Context, spec NetworkSpec) (rec NetworkRecord, created bool, err error) {
	if err := CheckName("network", spec.Name); err != nil {
		return NetworkRecord{}, false, err
	}
	for attempt := 0; attempt < 20; attempt++ {
		nets, rev, err := n.list(ctx)
		if err != nil {
			return NetworkRecord{}, false, err
		}
		if have, ok := nets[spec.Name]; ok {
			return have, false, compatible(spec, have)
		}
		rec, err := n.plan(spec, nets)
		if err != nil {
			return NetworkRecord{}, false, err
		}
		resp, err := n.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(n.keys.Network(spec.Name)), "=", 0),
			clientv3.Compare(clientv3.ModRevision(n.keys.Networks()), "<", rev+1).WithPrefix(),
			clientv3.Compare(clientv3.CreateRevision(n.keys.VNI(rec.VNI)), "=", 0),
		).Then(
			clientv3.OpPut(n.keys.Network(spec.Name), mustJSON(rec)),
			clientv3.OpPut(n.keys.VNI(rec.VNI), spec.Name),
		).Commit()
		if err != nil {
			return NetworkRecord{}, false, fmt.Errorf("cluster: create network %s: %w", spec.Name, err)
		}
		if resp.Succeeded {
			return rec, true, nil
		}
		// Another network appeared meanwhile (maybe this one): read again.
	}
	return NetworkRecord{}, false, fmt.Errorf("cluster: create network %s: too much contention, try again", spec.Name)
}

func compatible(spec NetworkSpec, have NetworkRecord) error {
	if spec.Subnet.IsValid() && spec.Subnet.Masked().String() != have.Subnet {
		return fmt.Errorf("cluster: network %s: asked for subnet %s, the cluster has %s: %w", spec.Name, spec.Subnet, have.Subnet, ErrNetworkConflict)
	}
	if spec.Subnet6.IsValid() && spec.Subnet6.Masked().String() != have.Subnet6 {
		return fmt.Errorf("cluster: network %s: asked for IPv6 subnet %s, the cluster has %q: %w", spec.Name, spec.Subnet6, have.Subnet6, ErrNetworkConflict)
	}
	return nil
}

// plan chooses the new network's subnet and VNI against every cluster
// network.
func (n *Networks) plan(spec NetworkSpec, nets map[string]NetworkRecord) (NetworkRecord, error) {
	var taken []netip.Prefix
	used := map[uint32]bool{}
	for _, r := range nets {
		for _, s := range []string{r.Subnet, r.Subnet6} {
			if p, err := netip.ParsePrefix(s); err == nil {
				taken = append(taken, p)
			}
		}
		used[r.VNI] = true
	}
	sub := spec.Subnet.Masked()
	if spec.Subnet.IsValid() {
		for name, r := range nets {
			for _, s := range []string{r.Subnet, r.Subnet6} {
				if p, err := netip.ParsePrefix(s); err == nil && p.Overlaps(sub) {
					return NetworkRecord{}, fmt.Errorf("cluster: network %s: subnet %s overlaps cluster network %s (%s)", spec.Name, sub, name, p)
				}
			}
		}
	} else {
		if spec.ChooseSubnet == nil {
			return NetworkRecord{}, fmt.Errorf("cluster: network %s: no subnet given and no way to choose one", spec.Name)
		}
		var err error
		sub, err = spec.ChooseSubnet(append(taken, spec.LocalTaken...))
		if err != nil {
			return NetworkRecord{}, fmt.Errorf("cluster: network %s: %w", spec.Name, err)
		}
	}
	if spec.Subnet6.IsValid() {
		s6 := spec.Subnet6.Masked()
		for name, r := range nets {
			if p, err := netip.ParsePrefix(r.Subnet6); err == nil && p.Overlaps(s6) {
				return NetworkRecord{}, fmt.Errorf("cluster: network %s: subnet %s overlaps cluster network %s (%s)", spec.Name, s6, name, p)
			}
		}
	}
	bits := spec.BlockBits
	if bits == 0 {
		bits = max(DefaultBlockBits, sub.Bits())
	}
	if bits < sub.Bits() || bits > 30 {
		return NetworkRecord{}, fmt.Errorf("cluster: network %s: block size /%d does not fit subnet %s (from /%d to /30)", spec.Name, bits, sub, sub.Bits())
	}
	vni := uint32(0)
	for v := uint32(MinVNI); v <= MaxVNI; v++ {
		if !used[v] {
			vni = v
			break
		}
	}
	if vni == 0 {
		return NetworkRecord{}, fmt.Errorf("cluster: network %s: no VNI left", spec.Name)
	}
	rec := NetworkRecord{Subnet: sub.String(), VNI: vni, MTU: spec.MTU, Internal: spec.Internal, BlockBits: bits, Creator: n.host}
	if spec.Subnet6.IsValid() {
		rec.Subnet6 = spec.Subnet6.Masked().String()
	}
	return rec, nil
}

// Remove deletes network name, its VNI reservation and its address blocks
// in one transaction, provided no host has an endpoint on it (checked in
// the same transaction). It returns ErrNoNetwork when absent and
// ErrNetworkInUse, naming the hosts, when endpoints remain.
func (n *Networks) Remove(ctx context.Context, name string) error {
	if err := CheckName("network", name); err != nil {
		return err
	}
	for attempt := 0; attempt < 20; attempt++ {
		resp, err := n.cli.Txn(ctx).Then(
			clientv3.OpGet(n.keys.Network(name)),
			clientv3.OpGet(n.keys.Endpoints(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		).Commit()
		if err != nil {
			return fmt.Errorf("cluster: remove network %s: %w", name, err)
		}
		rev := resp.Header.Revision
		nk := resp.Responses[0].GetResponseRange().Kvs
		if len(nk) == 0 {
			return fmt.Errorf("cluster: network %s: %w", name, ErrNoNetwork)
		}
		var rec NetworkRecord
		if err := json.Unmarshal(nk[0].Value, &rec); err != nil {
			return fmt.Errorf("cluster: network %s: bad record in etcd: %w", name, err)
		}
		hosts := map[string]int{}
		for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
			if p := n.keys.Parse(string(kv.Key)); p.Kind == KindEndpoint && p.Net == name {
				hosts[p.Host]++
			}
		}
		if len(hosts) > 0 {
			var hs []string
			for h, c := range hosts {
				hs = append(hs, fmt.Sprintf("%s (%d)", h, c))
			}
			sort.Strings(hs)
			return fmt.Errorf("cluster: network %s: endpoints on %s: %w", name, strings.Join(hs, ", "), ErrNetworkInUse)
		}
		tr, err := n.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(n.keys.Network(name)), "=", nk[0].ModRevision),
			clientv3.Compare(clientv3.ModRevision(n.keys.Endpoints()), "<", rev+1).WithPrefix(),
		).Then(
			clientv3.OpDelete(n.keys.Network(name)),
			clientv3.OpDelete(n.keys.VNI(rec.VNI)),
			clientv3.OpDelete(n.keys.IPAM(name), clientv3.WithPrefix()),
		).Commit()
		if err != nil {
			return fmt.Errorf("cluster: remove network %s: %w", name, err)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("cluster: remove network %s: too much contention, try again", name)
}
