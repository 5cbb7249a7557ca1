package netwatch

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

func net1(name string, ips ...string) *Network {
	n := &Network{Name: name, Subnet: netip.MustParsePrefix("10.202.7.0/24")}
	for i, ip := range ips {
		n.Endpoints = append(n.Endpoints, Endpoint{Name: fmt.Sprintf("e%d", i), Aliases: []string{"all"}, IPv4: netip.MustParseAddr(ip), Container: ip})
	}
	return n
}

func TestStoreReplaceDropsUnnamed(t *testing.T) {
	st := NewStore("a")
	st.Replace("a", []*Network{net1("x", "10.202.7.2"), net1("y", "10.202.7.3")})
	st.Replace("a", []*Network{net1("y", "10.202.7.3")})
	if st.Snapshot().Network("x") != nil {
		t.Fatal("x survived a Replace that did not name it")
	}
	if n, e, r := st.Snapshot().Counts(); n != 1 || e != 1 || r != 3 { // e0 + all + PTR
		t.Fatalf("counts %d %d %d", n, e, r)
	}
	if st.Snapshot().Client(netip.MustParseAddr("10.202.7.2")) != nil {
		t.Fatal("address of a dropped network still maps to a client")
	}
}

func TestStoreMergesSourcesAndDedups(t *testing.T) {
	st := NewStore()
	st.Update("a", net1("x", "10.202.7.2", "10.202.7.3"))
	st.Update("b", net1("X", "10.202.7.3", "10.202.7.4")) // same network, other case
	rs := st.Snapshot().Network("x").Lookup("all")
	if rs == nil || len(rs.V4) != 3 {
		t.Fatalf("merged alias: %v, want 3 distinct addresses", rs)
	}
	st.Remove("a", "x")
	if rs := st.Snapshot().Network("x").Lookup("all"); len(rs.V4) != 2 {
		t.Fatalf("after a removed its part: %v", rs.V4)
	}
}

// Readers never block and always see a consistent snapshot while writers
// swap them (run with -race).
func TestStoreConcurrentReaders(t *testing.T) {
	st := NewStore()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := st.Snapshot()
				if n := s.Network("x"); n != nil {
					if rs := n.Lookup("all"); rs == nil || len(rs.V4) != n.Endpoints() {
						t.Error("inconsistent snapshot")
						return
					}
				}
			}
		}()
	}
	for i := 0; i < 500; i++ {
		var ips []string
		for j := 0; j <= i%20; j++ {
			ips = append(ips, fmt.Sprintf("10.202.7.%d", j+2))
		}
		st.Update("a", net1("x", ips...))
	}
	close(stop)
	wg.Wait()
}

// A veth the link watcher has not reported yet is asked about (outside the
// writer lock: the hook may take its time) and, when it exists, its
// endpoint is served at once.
func TestStoreLinkExistsHook(t *testing.T) {
	var st *Store
	var asked []string
	st = NewStoreWith(StoreOptions{LinkExists: func(name string) bool {
		asked = append(asked, name)
		st.Stale() // takes the writer lock: deadlocks if called under it
		return name == "vnew"
	}})
	st.SyncLinks(map[string]struct{}{"vold": {}})
	st.Update("a", &Network{Name: "n", Endpoints: []Endpoint{
		{Name: "old", IPv4: netip.MustParseAddr("10.202.7.2"), HostVeth: "vold", Container: "old"},
		{Name: "new", IPv4: netip.MustParseAddr("10.202.7.3"), HostVeth: "vnew", Container: "new"},
		{Name: "dead", IPv4: netip.MustParseAddr("10.202.7.4"), HostVeth: "vdead", Container: "dead"},
	}})
	v := st.Snapshot().Network("n")
	if v.Endpoint("old") == nil || v.Endpoint("new") == nil {
		t.Fatal("an endpoint whose veth exists is hidden")
	}
	if v.Endpoint("dead") != nil {
		t.Fatal("an endpoint whose veth is gone is served")
	}
	if fmt.Sprint(asked) != "[vnew vdead]" {
		t.Fatalf("asked about %v, want only the unreported veths [vnew vdead]", asked)
	}
	// Once gone, the veth's endpoint goes, and the hook is asked again only
	// on the next write naming it.
	st.LinkRemoved("vnew")
	if st.Snapshot().Network("n").Endpoint("new") != nil {
		t.Fatal("endpoint survived its veth's removal")
	}
}

// A veth removed while the hook confirms it (the removal event arriving
// between the check and the update) must not be marked present.
func TestStoreLinkRemovedDuringConfirm(t *testing.T) {
	var st *Store
	st = NewStoreWith(StoreOptions{LinkExists: func(name string) bool {
		st.LinkRemoved(name) // the veth goes right after the check saw it
		return true
	}})
	st.SyncLinks(map[string]struct{}{})
	st.Update("a", &Network{Name: "n", Endpoints: []Endpoint{
		{Name: "c", IPv4: netip.MustParseAddr("10.202.7.2"), HostVeth: "v1", Container: "c"},
	}})
	if st.Snapshot().Network("n").Endpoint("c") != nil {
		t.Fatal("endpoint served though its veth was removed during the check")
	}
	st.LinkAdded("v1") // the watcher reports it (again): served
	if st.Snapshot().Network("n").Endpoint("c") == nil {
		t.Fatal("endpoint hidden after its veth was reported")
	}
}
