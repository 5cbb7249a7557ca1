package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netalias/netalias/agent/ipam"
)

// Blocks manages this host's address blocks on cluster networks. A host
// claims a block by compare-and-swap (key absent → put under its IPAM
// lease), then allocates addresses from the blocks it holds without asking
// etcd, so a host cut off from etcd can still attach containers from its
// blocks. Each host's gateway on a network is the first address it
// allocates there (the first usable address of its first block).
//
// The IPAM lease is separate from the host lease and much longer
// (DefaultIPAMLeaseTTL): a partition shorter than it never frees blocks
// still in use. Its ID is derived from the prefix and the host name, so
// every process on the host (the CLI's connect, the agent daemon) claims
// under the same lease without coordinating; the daemon keeps it alive.
type Blocks struct {
	cli  *clientv3.Client
	keys Keys
	host string
	ttl  time.Duration
}

// NewBlocks returns the block manager of host.
func NewBlocks(cli *clientv3.Client, keys Keys, host string, ipamTTL time.Duration) *Blocks {
	if ipamTTL == 0 {
		ipamTTL = DefaultIPAMLeaseTTL
	}
	return &Blocks{cli: cli, keys: keys, host: host, ttl: ipamTTL}
}

// LeaseID is this host's IPAM lease ID.
func (b *Blocks) LeaseID() clientv3.LeaseID {
	h := fnv.New64a()
	h.Write([]byte("netalias-ipam\x00" + b.keys.Prefix + "\x00" + b.host))
	return clientv3.LeaseID(h.Sum64()&(1<<62-1) | 1)
}

// ensureLease grants the IPAM lease when it does not exist.
func (b *Blocks) ensureLease(ctx context.Context) (clientv3.LeaseID, error) {
	id := b.LeaseID()
	_, err := clientv3.RetryLeaseClient(b.cli).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: int64(id), TTL: int64(b.ttl / time.Second)})
	if err != nil && !errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseExist) {
		return 0, fmt.Errorf("cluster: host %s: IPAM lease: %w", b.host, err)
	}
	return id, nil
}

// KeepAlive refreshes the IPAM lease every TTL/3 until ctx is done (the
// agent daemon runs it). A lease found gone (the daemon was down longer
// than its TTL) is granted again and lost is called: the blocks it held
// went with it and must be claimed again (Reclaim).
func (b *Blocks) KeepAlive(ctx context.Context, lost func()) {
	t := time.NewTicker(b.ttl / 3)
	defer t.Stop()
	for {
		_, err := b.cli.KeepAliveOnce(ctx, b.LeaseID())
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			if _, err := b.ensureLease(ctx); err == nil && lost != nil {
				lost()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Held returns the blocks host holds on network net.
func (b *Blocks) Held(ctx context.Context, net string) ([]netip.Prefix, error) {
	owners, _, err := b.owners(ctx, net)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for p, h := range owners {
		if h == b.host {
			out = append(out, p)
		}
	}
	sortPrefixes(out)
	return out, nil
}

func (b *Blocks) owners(ctx context.Context, net string) (map[netip.Prefix]string, int64, error) {
	resp, err := b.cli.Get(ctx, b.keys.Blocks(net), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: network %s: list address blocks: %w", net, err)
	}
	out := map[netip.Prefix]string{}
	for _, kv := range resp.Kvs {
		p := b.keys.Parse(string(kv.Key))
		if pre, err := netip.ParsePrefix(p.ID); p.Kind == KindBlock && err == nil {
			out[pre] = string(kv.Value)
		}
	}
	return out, resp.Header.Revision, nil
}

// Claim takes a free block of network net (described by rec) for this
// host, chosen at random among the free ones to keep hosts from racing
// for the same block. ErrNoBlock when every block is held.
func (b *Blocks) Claim(ctx context.Context, net string, rec NetworkRecord) (netip.Prefix, error) {
	subnet, err := netip.ParsePrefix(rec.Subnet)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cluster: network %s: bad subnet %q in etcd", net, rec.Subnet)
	}
	bits := rec.BlockBits
	if bits == 0 {
		bits = max(DefaultBlockBits, subnet.Bits())
	}
	all, err := SplitBlocks(subnet, bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cluster: network %s: %w", net, err)
	}
	lease, err := b.ensureLease(ctx)
	if err != nil {
		return netip.Prefix{}, err
	}
	for attempt := 0; attempt < 50; attempt++ {
		owners, _, err := b.owners(ctx, net)
		if err != nil {
			return netip.Prefix{}, err
		}
		var free []netip.Prefix
		for _, p := range all {
			if _, ok := owners[p]; !ok {
				free = append(free, p)
			}
		}
		if len(free) == 0 {
			return netip.Prefix{}, fmt.Errorf("cluster: network %s: all %d address blocks of %s are held: %w", net, len(all), subnet, ErrNoBlock)
		}
		p := free[rand.IntN(len(free))]
		k := b.keys.Block(net, p.String())
		resp, err := b.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(k), "=", 0),
			// The network still exists (a removal deletes its blocks).
			clientv3.Compare(clientv3.CreateRevision(b.keys.Network(net)), ">", 0),
		).Then(clientv3.OpPut(k, b.host, clientv3.WithLease(lease))).
			Else(clientv3.OpGet(b.keys.Network(net), clientv3.WithCountOnly())).Commit()
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			// Expired between the grant and the put: grant again.
			if lease, err = b.ensureLease(ctx); err != nil {
				return netip.Prefix{}, err
			}
			continue
		}
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("cluster: network %s: claim block %s: %w", net, p, err)
		}
		if resp.Succeeded {
			// Refresh the lease to its full TTL, whoever granted it.
			if _, err := b.cli.KeepAliveOnce(ctx, lease); err != nil {
				return p, fmt.Errorf("cluster: network %s: refresh IPAM lease after claiming %s: %w", net, p, err)
			}
			return p, nil
		}
		if resp.Responses[0].GetResponseRange().Count == 0 {
			return netip.Prefix{}, fmt.Errorf("cluster: network %s: %w", net, ErrNoNetwork)
		}
		// The block went to another host meanwhile: choose again.
	}
	return netip.Prefix{}, fmt.Errorf("cluster: network %s: could not claim an address block after 50 attempts", net)
}

// ErrNoBlock means every address block of a network is held.
var ErrNoBlock = errors.New("no free address block")

// Reclaim claims again blocks this host used (from its local state) that
// etcd no longer shows as its own, after the IPAM lease was lost. It
// returns the blocks another host took meanwhile: their endpoints must be
// re-addressed.
func (b *Blocks) Reclaim(ctx context.Context, net string, blocks []netip.Prefix) (conflicts []netip.Prefix, err error) {
	lease, err := b.ensureLease(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range blocks {
		k := b.keys.Block(net, p.Masked().String())
		resp, err := b.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, b.host, clientv3.WithLease(lease))).
			Else(clientv3.OpGet(k)).Commit()
		if err != nil {
			return conflicts, fmt.Errorf("cluster: network %s: reclaim block %s: %w", net, p, err)
		}
		if resp.Succeeded {
			continue
		}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 && string(kvs[0].Value) != b.host {
			conflicts = append(conflicts, p)
		}
	}
	return conflicts, nil
}

// Release gives a block back, if this host holds it.
func (b *Blocks) Release(ctx context.Context, net string, block netip.Prefix) error {
	k := b.keys.Block(net, block.Masked().String())
	_, err := b.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(k), "=", b.host)).Then(clientv3.OpDelete(k)).Commit()
	if err != nil {
		return fmt.Errorf("cluster: network %s: release block %s: %w", net, block, err)
	}
	return nil
}

// Allocate returns a free address for this host on network net: from the
// blocks it holds (no etcd involved), else from a block it claims now
// (one transaction), which it returns in claimed for the caller to record
// with its state. used holds the addresses in use on this host.
func (b *Blocks) Allocate(ctx context.Context, net string, rec NetworkRecord, held []netip.Prefix, used map[netip.Addr]bool) (addr netip.Addr, claimed netip.Prefix, err error) {
	subnet, err := netip.ParsePrefix(rec.Subnet)
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("cluster: network %s: bad subnet %q in etcd", net, rec.Subnet)
	}
	if a, ok := AllocFromBlocks(subnet, held, used); ok {
		return a, netip.Prefix{}, nil
	}
	p, err := b.Claim(ctx, net, rec)
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, err
	}
	a, ok := AllocFromBlocks(subnet, []netip.Prefix{p}, used)
	if !ok {
		return netip.Addr{}, p, fmt.Errorf("cluster: network %s: new block %s has no usable address", net, p)
	}
	return a, p, nil
}

// AllocFromBlocks returns the lowest address of blocks (in order) that is
// neither used nor the subnet's network or broadcast address. Pure: it
// works without etcd (the agent's light build uses ipam's directly).
func AllocFromBlocks(subnet netip.Prefix, blocks []netip.Prefix, used map[netip.Addr]bool) (netip.Addr, bool) {
	return ipam.AllocFromBlocks(subnet, blocks, used)
}

// SplitBlocks returns the blocks of size bits that make up subnet.
func SplitBlocks(subnet netip.Prefix, bits int) ([]netip.Prefix, error) {
	subnet = subnet.Masked()
	if bits < subnet.Bits() || bits > subnet.Addr().BitLen() {
		return nil, fmt.Errorf("block size /%d does not fit subnet %s", bits, subnet)
	}
	if bits-subnet.Bits() > 20 {
		return nil, fmt.Errorf("subnet %s holds more than 2^20 blocks of /%d", subnet, bits)
	}
	n := 1 << (bits - subnet.Bits())
	base := new(big.Int).SetBytes(subnet.Addr().AsSlice())
	step := new(big.Int).Lsh(big.NewInt(1), uint(subnet.Addr().BitLen()-bits))
	out := make([]netip.Prefix, 0, n)
	size := subnet.Addr().BitLen() / 8
	for i := 0; i < n; i++ {
		v := new(big.Int).Add(base, new(big.Int).Mul(step, big.NewInt(int64(i))))
		buf := make([]byte, size)
		v.FillBytes(buf)
		a, _ := netip.AddrFromSlice(buf)
		out = append(out, netip.PrefixFrom(a, bits))
	}
	return out, nil
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(a)*8; i++ {
		a[i/8] |= 1 << (7 - i%8)
	}
	out, _ := netip.AddrFromSlice(a)
	return out
}

func sortPrefixes(ps []netip.Prefix) {
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && ps[j].Addr().Less(ps[j-1].Addr()); j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}
