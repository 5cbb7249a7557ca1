// Command agent-bench times `netalias connect` and `netalias disconnect`
// per endpoint, one CLI process per operation (what a user runs), against
// Podman's netavark setup/teardown on the same kind of namespace, in the
// same run, in interleaved rounds. Run it through bench/agent.sh.
//
// Subnets: 10.201.200.0/24 (netalias), 10.201.201.0/24 (netavark).
// Namespaces: nat-bench-<random>-N, deleted at the end.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

var (
	bin      = flag.String("netalias", "", "path of the netalias binary")
	netavark = flag.String("netavark", "/usr/lib/podman/netavark", "path of netavark")
	n        = flag.Int("n", 20, "namespaces per round")
	rounds   = flag.Int("rounds", 3, "interleaved rounds")
	dns      = flag.Bool("netavark-dns", false, "enable DNS (aardvark-dns) on the netavark network")
)

func main() {
	flag.Parse()
	if *bin == "" {
		fatal("give -netalias PATH")
	}
	if os.Geteuid() != 0 {
		fatal("needs root (namespaces, bridges, nftables)")
	}
	b := &bench{}
	defer b.cleanup()
	if err := b.run(); err != nil {
		b.cleanup()
		fatal(err.Error())
	}
}

func fatal(msg string) {
	fmt.Fprintln(os.Stderr, "agent-bench:", msg)
	os.Exit(1)
}

type bench struct {
	tmp      string
	stateDir string
	netName  string
	nvDir    string
	ours     []string // namespaces for netalias
	theirs   []string // namespaces for netavark
	cleanups []func()
}

func (b *bench) cleanup() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}

func (b *bench) defer_(f func()) { b.cleanups = append(b.cleanups, f) }

func randHex(k int) string {
	x := make([]byte, k)
	rand.Read(x)
	return hex.EncodeToString(x)
}

func sh(name string, args ...string) ([]byte, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

func (b *bench) netns(name string) error {
	if _, err := sh("ip", "netns", "add", name); err != nil {
		return err
	}
	b.defer_(func() { sh("ip", "netns", "del", name) })
	return nil
}

// timed runs a command and returns its wall time.
func timed(stdin []byte, name string, args ...string) (time.Duration, error) {
	c := exec.Command(name, args...)
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	t0 := time.Now()
	err := c.Run()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out.String())
	}
	return d, nil
}

func (b *bench) run() error {
	var err error
	if b.tmp, err = os.MkdirTemp("", "netalias-agent-bench-"); err != nil {
		return err
	}
	b.defer_(func() { os.RemoveAll(b.tmp) })
	tag := randHex(3)
	b.stateDir = filepath.Join(b.tmp, "state")

	// netalias network.
	b.netName = "bench" + tag
	if _, err := sh(*bin, "--state-dir", b.stateDir, "network", "create", "--subnet", "10.201.200.0/24", b.netName); err != nil {
		return err
	}
	b.defer_(func() { sh(*bin, "--state-dir", b.stateDir, "network", "rm", "--force", b.netName) })

	// netavark network, described by podman itself, bridge renamed to one
	// of ours so it cannot collide with anyone's podmanN.
	cfg := filepath.Join(b.tmp, "podman-networks")
	nvNet := "nabench" + tag
	args := []string{"--network-config-dir", cfg, "network", "create", "--subnet", "10.201.201.0/24"}
	if !*dns {
		args = append(args, "--disable-dns")
	}
	if _, err := sh("podman", append(args, nvNet)...); err != nil {
		return err
	}
	out, err := sh("podman", "--network-config-dir", cfg, "network", "inspect", nvNet)
	if err != nil {
		return err
	}
	var infos []map[string]any
	if err := json.Unmarshal(out, &infos); err != nil || len(infos) != 1 {
		return fmt.Errorf("podman network inspect: %v: %s", err, out)
	}
	info := infos[0]
	info["network_interface"] = "nab" + tag
	b.nvDir = filepath.Join(b.tmp, "netavark")
	if err := os.MkdirAll(b.nvDir, 0o755); err != nil {
		return err
	}
	opts := func(ns string, ip string) []byte {
		o := map[string]any{
			"container_id":   randHex(32),
			"container_name": ns,
			"networks": map[string]any{nvNet: map[string]any{
				"interface_name": "eth0", "static_ips": []string{ip}, "aliases": []string{ns},
			}},
			"network_info": map[string]any{nvNet: info},
		}
		j, _ := json.Marshal(o)
		return j
	}

	// Namespaces. An anchor container keeps netavark's bridge alive, as a
	// netalias network exists independently of its endpoints.
	for i := 0; i < *n; i++ {
		a, t := fmt.Sprintf("nat-bench-%s-a%d", tag, i), fmt.Sprintf("nat-bench-%s-b%d", tag, i)
		if err := b.netns(a); err != nil {
			return err
		}
		if err := b.netns(t); err != nil {
			return err
		}
		b.ours, b.theirs = append(b.ours, a), append(b.theirs, t)
	}
	anchor := fmt.Sprintf("nat-bench-%s-anchor", tag)
	if err := b.netns(anchor); err != nil {
		return err
	}
	anchorOpts := opts(anchor, "10.201.201.254")
	// Teardown is registered before setup: a setup that fails midway
	// leaves a bridge and iptables rules that only teardown removes.
	b.defer_(func() { timed(anchorOpts, *netavark, "--config", b.nvDir, "teardown", "/run/netns/"+anchor) })
	if _, err := timed(anchorOpts, *netavark, "--config", b.nvDir, "setup", "/run/netns/"+anchor); err != nil {
		return err
	}
	nvOpts := make([][]byte, *n)
	setUp := map[int]bool{} // netavark endpoints currently set up
	for i, ns := range b.theirs {
		nvOpts[i] = opts(ns, fmt.Sprintf("10.201.201.%d", i+2))
	}
	b.defer_(func() {
		for i := range setUp {
			timed(nvOpts[i], *netavark, "--config", b.nvDir, "teardown", "/run/netns/"+b.theirs[i])
		}
	})

	var oc, od, nc, nd []time.Duration
	var rcs, rds []float64 // per-round median ratios
	for r := 0; r < *rounds; r++ {
		o0, n0 := len(oc), len(nc)
		for i, ns := range b.ours {
			d, err := timed(nil, *bin, "--state-dir", b.stateDir, "connect", b.netName, ns)
			if err != nil {
				return err
			}
			oc = append(oc, d)
			_ = i
		}
		for _, ns := range b.ours {
			d, err := timed(nil, *bin, "--state-dir", b.stateDir, "disconnect", b.netName, ns)
			if err != nil {
				return err
			}
			od = append(od, d)
		}
		// Let our background reapers finish before timing netavark, so
		// neither side pays for the other's leftovers.
		if err := b.waitReaped(10 * time.Second); err != nil {
			return err
		}
		for i, ns := range b.theirs {
			setUp[i] = true
			d, err := timed(nvOpts[i], *netavark, "--config", b.nvDir, "setup", "/run/netns/"+ns)
			if err != nil {
				return err
			}
			nc = append(nc, d)
		}
		for i, ns := range b.theirs {
			d, err := timed(nvOpts[i], *netavark, "--config", b.nvDir, "teardown", "/run/netns/"+ns)
			if err != nil {
				return err
			}
			delete(setUp, i)
			nd = append(nd, d)
		}
		rc := float64(pct(oc[o0:], .5)) / float64(pct(nc[n0:], .5))
		rd := float64(pct(od[o0:], .5)) / float64(pct(nd[n0:], .5))
		rcs, rds = append(rcs, rc), append(rds, rd)
		fmt.Printf("round %d: connect/setup %.3f  disconnect/teardown %.3f\n", r+1, rc, rd)
	}
	fmt.Println()
	report(oc, od, nc, nd, median(rcs), median(rds))
	return nil
}

// waitReaped waits until no veth of ours is pending deletion.
func (b *bench) waitReaped(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		data, err := os.ReadFile(filepath.Join(b.stateDir, "networks", b.netName+".json"))
		if err != nil {
			return err
		}
		var f struct {
			Pending []any `json:"pending_delete"`
		}
		json.Unmarshal(data, &f)
		if len(f.Pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d veths still pending deletion after %v", len(f.Pending), limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pct(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1)+0.5)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%6.2f ms", float64(d)/1e6) }

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func report(oc, od, nc, nd []time.Duration, roundRC, roundRD float64) {
	fmt.Printf("%d operations each (%d rounds x %d namespaces), wall time per CLI process\n\n", len(oc), *rounds, *n)
	fmt.Printf("%-28s %10s %10s\n", "", "median", "p90")
	fmt.Printf("%-28s %10s %10s\n", "netalias connect", ms(pct(oc, .5)), ms(pct(oc, .9)))
	fmt.Printf("%-28s %10s %10s\n", "netavark setup", ms(pct(nc, .5)), ms(pct(nc, .9)))
	fmt.Printf("%-28s %10s %10s\n", "netalias disconnect", ms(pct(od, .5)), ms(pct(od, .9)))
	fmt.Printf("%-28s %10s %10s\n", "netavark teardown", ms(pct(nd, .5)), ms(pct(nd, .9)))
	rc := float64(pct(oc, .5)) / float64(pct(nc, .5))
	rd := float64(pct(od, .5)) / float64(pct(nd, .5))
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	fmt.Printf("\nconnect/setup median ratio       %.3f (median of per-round ratios %.3f; target <= 0.25: %s)\n", rc, roundRC, verdict(rc <= 0.25))
	fmt.Printf("disconnect/teardown median ratio %.3f (median of per-round ratios %.3f; target <= 0.40: %s)\n", rd, roundRD, verdict(rd <= 0.4))
}
