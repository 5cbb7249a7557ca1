package test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netalias/netalias/state"
)

// The crash tests check the agent's invariant (agent/README.md,
// "Invariant") after real SIGKILLs, with two oracles: `netalias check`,
// and the independent reading below, which asks the kernel and the file
// system directly and shares no code with the agent.

// ipLink is the part of `ip -j -d link show` the oracle reads.
type ipLink struct {
	Index     int    `json:"ifindex"`
	Name      string `json:"ifname"`
	Master    string `json:"master"`
	LinkIndex int    `json:"link_index"`
	LinkNetns *int   `json:"link_netnsid"`
	Operstate string `json:"operstate"`
	Info      struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
	Addrs []struct {
		Family string `json:"family"`
		Local  string `json:"local"`
		Prefix int    `json:"prefixlen"`
		Scope  string `json:"scope"`
	} `json:"addr_info"`
}

func ipJSON(t *testing.T, args ...string) []ipLink {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-j", "-d"}, args...)...).Output()
	if err != nil {
		t.Fatalf("ip %s: %v", strings.Join(args, " "), err)
	}
	var links []ipLink
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatalf("ip %s: %v", strings.Join(args, " "), err)
	}
	return links
}

// nsAddrs returns the links of a named namespace with their addresses.
func nsAddrs(t *testing.T, ns string) []ipLink {
	return ipJSON(t, "-n", ns, "addr", "show")
}

// invariantViolations reads the state directory, the kernel and the
// resolver files, and lists every place they disagree. namespaces are the
// named namespaces the test made (others' namespaces are not ours to read).
func invariantViolations(t *testing.T, dir string, namespaces []string) []string {
	t.Helper()
	var bad []string
	report := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }

	ents, err := os.ReadDir(state.NetworksPath(dir))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var files []*state.File
	for _, de := range ents {
		if strings.HasPrefix(de.Name(), ".") {
			report("stray file %s in the state directory", de.Name())
			continue
		}
		f, err := state.Read(filepath.Join(state.NetworksPath(dir), de.Name()))
		if err != nil {
			report("state file %s: %v", de.Name(), err)
			continue
		}
		files = append(files, f)
	}

	host := ipJSON(t, "link", "show")
	byName := map[string]ipLink{}
	byIndex := map[int]ipLink{}
	for _, l := range host {
		byName[l.Name] = l
		byIndex[l.Index] = l
	}
	recorded := map[string]bool{} // host veths with a record or a pending entry
	type want struct {
		network, ifname, addr string
		subnet                netip.Prefix
	}
	wants := map[string][]want{}        // namespace name → endpoints in it
	nsNetworks := map[string][]string{} // namespace name → its networks, in connect order
	for _, f := range files {
		n := f.Network
		if br, ok := byName[n.Bridge]; !ok {
			report("network %s: bridge %s missing", n.Name, n.Bridge)
		} else if br.Info.Kind != "bridge" {
			report("network %s: %s is not a bridge", n.Name, n.Bridge)
		}
		for _, p := range f.PendingDelete {
			recorded[p.Name] = true
		}
		seen := map[string]string{}
		eps := slices.Clone(f.Endpoints)
		slices.SortFunc(eps, func(a, b state.Endpoint) int { return a.Created.Compare(b.Created) })
		for _, ep := range eps {
			recorded[ep.HostVeth] = true
			addr := fmt.Sprint(ep.IPv4)
			if other, dup := seen[addr]; dup && ep.IPv4.IsValid() {
				report("network %s: address %s held by %s and %s", n.Name, addr, other, ep.Name)
			}
			seen[addr] = ep.Name
			if ep.HostVeth == "" {
				// A Docker address reservation: addresses, no veth yet.
				continue
			}
			v, ok := byName[ep.HostVeth]
			switch {
			case !ok:
				report("endpoint %s on %s: host veth %s missing", ep.Name, n.Name, ep.HostVeth)
			case v.Master != n.Bridge:
				report("endpoint %s on %s: host veth %s is on %q, not %s", ep.Name, n.Name, ep.HostVeth, v.Master, n.Bridge)
			}
			if filepath.Dir(ep.Netns) == "/run/netns" {
				ns := filepath.Base(ep.Netns)
				sub, _ := netip.ParsePrefix(fmt.Sprint(n.Subnet))
				wants[ns] = append(wants[ns], want{n.Name, ep.IfName, addr, sub})
				if ep.Attachment == nil {
					// A runtime (CNI) writes its own resolv.conf.
					nsNetworks[ns] = append(nsNetworks[ns], n.Name)
				}
			}
		}
	}

	for _, ns := range namespaces {
		if _, err := os.Stat("/run/netns/" + ns); err != nil {
			continue
		}
		links := nsAddrs(t, ns)
		holders := map[string][]string{} // address → interfaces holding it
		for _, l := range links {
			if l.Name == "lo" {
				continue
			}
			for _, a := range l.Addrs {
				if a.Family == "inet" {
					holders[a.Local] = append(holders[a.Local], l.Name)
				}
			}
			// Every veth inside must have a host peer the state knows.
			if l.Info.Kind == "veth" && l.LinkNetns != nil {
				peer, ok := byIndex[l.LinkIndex]
				if ok && !recorded[peer.Name] {
					report("namespace %s: %s's host peer %s has no record", ns, l.Name, peer.Name)
				}
			}
		}
		for a, ifs := range holders {
			if len(ifs) > 1 {
				report("namespace %s: address %s on %d interfaces %v", ns, a, len(ifs), ifs)
			}
		}
		for _, w := range wants[ns] {
			var inNet []string
			for _, l := range links {
				for _, a := range l.Addrs {
					if p, err := netip.ParseAddr(a.Local); err == nil && w.subnet.Contains(p) {
						inNet = append(inNet, l.Name)
					}
				}
			}
			if len(inNet) != 1 {
				report("namespace %s: %d interfaces %v on network %s, want exactly one", ns, len(inNet), inNet, w.network)
			}
			ok := false
			for _, l := range links {
				if l.Name != w.ifname {
					continue
				}
				for _, a := range l.Addrs {
					ok = ok || a.Local == w.addr
				}
			}
			if !ok {
				report("namespace %s: %s does not hold %s of network %s", ns, w.ifname, w.addr, w.network)
			}
		}
		rc := "/etc/netns/" + ns + "/resolv.conf"
		b, err := os.ReadFile(rc)
		switch {
		case len(nsNetworks[ns]) == 0:
			if err == nil && strings.Contains(string(b), "netalias") {
				report("namespace %s: resolver file left behind with no network", ns)
			}
		case err != nil:
			report("namespace %s: resolver file: %v", ns, err)
		default:
			for _, n := range nsNetworks[ns] {
				if !strings.Contains(string(b), n) {
					report("namespace %s: resolver file does not search %s", ns, n)
				}
			}
		}
	}
	return bad
}

// settle waits (at most d) for the reaper to finish pending deletions, then
// returns the violations left.
func settle(t *testing.T, dir string, namespaces []string, d time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		bad := invariantViolations(t, dir, namespaces)
		if len(bad) == 0 || time.Now().After(deadline) {
			return bad
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killAt starts netalias with args and SIGKILLs it after d (if it has
// not finished by then). It reports whether the kill landed and how long
// the process ran.
func (e *agentEnv) killAt(d time.Duration, args ...string) (bool, time.Duration) {
	e.t.Helper()
	cmd := exec.Command(e.bin, append([]string{"--state-dir", e.dir}, args...)...)
	cmd.Env = append(os.Environ(), "NETALIAS_ADDRESS_POOLS="+e.pool)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return false, time.Since(start)
	case <-time.After(d):
	}
	killed := cmd.Process.Signal(syscall.SIGKILL) == nil
	err := <-done
	if ee, ok := err.(*exec.ExitError); ok && killed {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return true, time.Since(start)
		}
	}
	return false, time.Since(start)
}

func randDelay(max time.Duration) time.Duration { return time.Duration(rand.Int64N(int64(max) + 1)) }
