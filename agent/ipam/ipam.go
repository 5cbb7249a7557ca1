// Package ipam picks subnets for networks and addresses for endpoints. It is
// pure: callers pass in what is taken (host routes, other networks, live
// endpoints, remembered leases) and persist the result themselves.
package ipam

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// EnvPools names the environment variable that replaces the default
// address pools, as "CIDR:SIZE[,CIDR:SIZE]..." (e.g. "10.201.0.0/16:24").
const EnvPools = "NETALIAS_ADDRESS_POOLS"

// Pool is a base range carved into subnets of Size bits, like Docker's
// default-address-pools.
type Pool struct {
	Base netip.Prefix
	Size int
}

// DefaultPools mirrors Docker's defaults: 172.17.0.0/16 … 172.31.0.0/16,
// then 192.168.0.0/16 in /20s.
func DefaultPools() []Pool {
	return []Pool{
		{netip.MustParsePrefix("172.17.0.0/16"), 16},
		{netip.MustParsePrefix("172.18.0.0/15"), 16},
		{netip.MustParsePrefix("172.20.0.0/14"), 16},
		{netip.MustParsePrefix("172.24.0.0/13"), 16},
		{netip.MustParsePrefix("192.168.0.0/16"), 20},
	}
}

// ParsePools parses the EnvPools syntax.
func ParsePools(s string) ([]Pool, error) {
	var pools []Pool
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		cidr, size, ok := strings.Cut(item, ":")
		if !ok {
			return nil, fmt.Errorf("address pool %q: want CIDR:SIZE, e.g. 10.201.0.0/16:24", item)
		}
		base, err := netip.ParsePrefix(cidr)
		if err != nil || !base.Addr().Is4() {
			return nil, fmt.Errorf("address pool %q: %q is not an IPv4 CIDR", item, cidr)
		}
		n, err := strconv.Atoi(size)
		if err != nil || n < base.Bits() || n > 30 {
			return nil, fmt.Errorf("address pool %q: size must be between %d and 30", item, base.Bits())
		}
		pools = append(pools, Pool{base.Masked(), n})
	}
	if len(pools) == 0 {
		return nil, fmt.Errorf("address pools %q: empty", s)
	}
	return pools, nil
}

// AllocSubnet returns the first subnet from pools that overlaps nothing in
// taken.
func AllocSubnet(pools []Pool, taken []netip.Prefix) (netip.Prefix, error) {
	for _, p := range pools {
		step := uint64(1) << (32 - p.Size)
		count := uint64(1) << (p.Size - p.Base.Bits())
		base := u32(p.Base.Addr())
		for i := uint64(0); i < count; i++ {
			cand := netip.PrefixFrom(from32(uint32(uint64(base)+i*step)), p.Size)
			free := true
			for _, t := range taken {
				if cand.Overlaps(t) {
					free = false
					break
				}
			}
			if free {
				return cand, nil
			}
		}
	}
	return netip.Prefix{}, errors.New("no free subnet left in the address pools; give one with --subnet")
}

// RandomULA64 returns a random fdXX:XXXX:XXXX::/64 (RFC 4193) for a
// dual-stack network created without --subnet6.
func RandomULA64() netip.Prefix {
	var b [16]byte
	b[0] = 0xfd
	rand.Read(b[1:6])
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// FirstHost returns the first usable address of subnet (the conventional
// gateway).
func FirstHost(subnet netip.Prefix) netip.Addr { return subnet.Masked().Addr().Next() }

// Broadcast returns the last address of an IPv4 subnet (for IPv6: the last
// address of the prefix, also refused as a host address for symmetry).
func Broadcast(subnet netip.Prefix) netip.Addr {
	a := subnet.Masked().Addr().As16()
	bits := subnet.Bits()
	if subnet.Addr().Is4() {
		bits += 96
	}
	for i := bits; i < 128; i++ {
		a[i/8] |= 1 << (7 - i%8)
	}
	addr := netip.AddrFrom16(a)
	if subnet.Addr().Is4() {
		return addr.Unmap()
	}
	return addr
}

// CheckSubnet validates a user-given subnet and gateway: the subnet must be
// its own network address and leave room for hosts, the gateway must be a
// host address inside it.
func CheckSubnet(flag string, subnet netip.Prefix, gateway netip.Addr, want4 bool) error {
	if subnet.Addr().Is4() != want4 || subnet.Addr().Is4In6() {
		fam := "IPv6"
		if want4 {
			fam = "IPv4"
		}
		return fmt.Errorf("%s %s is not an %s subnet", flag, subnet, fam)
	}
	if subnet.Masked() != subnet {
		return fmt.Errorf("%s %s has host bits set (did you mean %s?)", flag, subnet, subnet.Masked())
	}
	max := 30
	if !want4 {
		max = 126
	}
	if subnet.Bits() > max {
		return fmt.Errorf("%s %s is too small for a gateway and endpoints", flag, subnet)
	}
	// --subnet pairs with --gateway, --subnet6 with --gateway6.
	return CheckHost(strings.Replace(flag, "subnet", "gateway", 1), subnet, gateway)
}

// CheckHost checks that a is a usable host address of subnet.
func CheckHost(what string, subnet netip.Prefix, a netip.Addr) error {
	if !subnet.Contains(a) {
		return fmt.Errorf("%s %s is not inside subnet %s", what, a, subnet)
	}
	if a == subnet.Masked().Addr() {
		return fmt.Errorf("%s %s is the network address of %s", what, a, subnet)
	}
	if a == Broadcast(subnet) {
		return fmt.Errorf("%s %s is the broadcast address of %s", what, a, subnet)
	}
	return nil
}

// AllocAddr picks a host address in subnet. preferred (a remembered lease)
// wins when free; otherwise the lowest address that is neither used nor
// remembered by another name; as a last resort a remembered one.
func AllocAddr(subnet netip.Prefix, used, remembered map[netip.Addr]bool, preferred netip.Addr) (netip.Addr, error) {
	if preferred.IsValid() && subnet.Contains(preferred) && !used[preferred] && CheckHost("address", subnet, preferred) == nil {
		return preferred, nil
	}
	bcast := Broadcast(subnet)
	var fallback netip.Addr
	// Cap the scan: IPv6 /64s are effectively infinite.
	n := 0
	for a := FirstHost(subnet); subnet.Contains(a) && a != bcast && n < 1<<20; a, n = a.Next(), n+1 {
		if used[a] {
			continue
		}
		if remembered[a] {
			if !fallback.IsValid() {
				fallback = a
			}
			continue
		}
		return a, nil
	}
	if fallback.IsValid() {
		return fallback, nil
	}
	return netip.Addr{}, fmt.Errorf("no free address left in subnet %s", subnet)
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func from32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// AllocFromBlocks returns the lowest address of blocks (in order) that is
// neither used nor the subnet's network or broadcast address. Pure: it
// works without etcd; the cluster mode's address blocks use it.
func AllocFromBlocks(subnet netip.Prefix, blocks []netip.Prefix, used map[netip.Addr]bool) (netip.Addr, bool) {
	subnet = subnet.Masked()
	netAddr, bcast := subnet.Addr(), Broadcast(subnet)
	for _, blk := range blocks {
		blk = blk.Masked()
		if !subnet.Contains(blk.Addr()) || blk.Bits() < subnet.Bits() {
			continue
		}
		n := 0
		for a := blk.Addr(); blk.Contains(a) && n < 1<<16; a, n = a.Next(), n+1 {
			if a == netAddr || a == bcast || used[a] {
				continue
			}
			return a, true
		}
	}
	return netip.Addr{}, false
}
