package netwatch

import (
	"net/netip"
)

// addrShard holds the addresses of one /24 (IPv4) or /64 (IPv6): a change
// to one network copies only the shards it touches.
type addrShard map[netip.Addr]*addrEntry

func shardOf(a netip.Addr) uint64 {
	if a.Is4() {
		b := a.As4()
		return uint64(b[0])<<16 | uint64(b[1])<<8 | uint64(b[2])
	}
	b := a.As16()
	return 1<<63 | (uint64(b[0])<<56|uint64(b[1])<<48|uint64(b[2])<<40|uint64(b[3])<<32|
		uint64(b[4])<<24|uint64(b[5])<<16|uint64(b[6])<<8|uint64(b[7]))>>1
}

// addrWriter copies a shard on its first write in this update.
type addrWriter struct {
	snap   *Snapshot
	copied map[uint64]bool
}

func (w *addrWriter) shard(a netip.Addr) addrShard {
	k := shardOf(a)
	if w.copied[k] {
		return w.snap.addrs[k]
	}
	old := w.snap.addrs[k]
	sh := make(addrShard, len(old)+1)
	for x, e := range old {
		sh[x] = e
	}
	w.snap.addrs[k] = sh
	w.copied[k] = true
	return sh
}

func (w *addrWriter) delIf(a netip.Addr, net string) {
	if !a.IsValid() {
		return
	}
	if e := w.snap.addrs[shardOf(a)][a]; e == nil || e.net != net {
		return
	}
	sh := w.shard(a)
	delete(sh, a)
	w.snap.naddrs--
	if len(sh) == 0 {
		delete(w.snap.addrs, shardOf(a))
		delete(w.copied, shardOf(a))
	}
}

func (w *addrWriter) set(a netip.Addr, e *addrEntry) {
	if !a.IsValid() {
		return
	}
	sh := w.shard(a)
	if _, ok := sh[a]; !ok {
		w.snap.naddrs++
	}
	sh[a] = e
}
