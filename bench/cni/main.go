// Command cni-bench times the netalias CNI plugin's ADD, CHECK and DEL per
// attachment against Debian's reference bridge + host-local (ipMasq on;
// netalias masquerades its non-internal networks too), driven the way
// Podman and containerd drive plugins (libcni, one plugin process per
// call, a result cache), on the same kind of fresh namespaces, in the
// same run, in interleaved rounds. Run it through bench/cni.sh.
//
// Subnets: 10.201.202.0/24 (netalias), 10.206.251.0/24 (bridge).
// Namespaces: nacb-<random>-N, deleted at the end.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/netalias/netalias/cni"
)

var (
	bin    = flag.String("netalias", "", "path of the netalias binary")
	refDir = flag.String("plugins", "/usr/lib/cni", "directory of the reference plugins")
	n      = flag.Int("n", 10, "attachments per round and side")
	rounds = flag.Int("rounds", 3, "interleaved rounds")
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
	err := b.run()
	b.cleanup()
	if err != nil {
		fatal(err.Error())
	}
}

func fatal(msg string) {
	fmt.Fprintln(os.Stderr, "cni-bench:", msg)
	os.Exit(1)
}

type bench struct{ cleanups []func() }

func (b *bench) cleanup() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}

func (b *bench) later(f func()) { b.cleanups = append(b.cleanups, f) }

func randHex(k int) string {
	x := make([]byte, k)
	rand.Read(x)
	return hex.EncodeToString(x)
}

func sh(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %v: %v: %s", name, args, err, out)
	}
	return nil
}

// side is one plugin setup under test.
type side struct {
	name            string
	lib             *libcni.CNIConfig
	list            *libcni.NetworkConfigList
	ns              []string
	add, check, del []time.Duration
}

func (b *bench) run() error {
	tmp, err := os.MkdirTemp("", "cni-bench-")
	if err != nil {
		return err
	}
	b.later(func() { os.RemoveAll(tmp) })
	id := randHex(3)

	// netalias: a network in a private state directory, the binary on a
	// CNI_PATH under its type name.
	stateDir := filepath.Join(tmp, "state")
	net := "cb" + id
	if err := sh(*bin, "--state-dir", stateDir, "network", "create", "--subnet", "10.201.202.0/24", net); err != nil {
		return err
	}
	b.later(func() { sh(*bin, "--state-dir", stateDir, "network", "rm", "--force", net) })
	pdir := filepath.Join(tmp, "plugins")
	os.MkdirAll(pdir, 0o755)
	if err := os.Symlink(*bin, filepath.Join(pdir, "netalias")); err != nil {
		return err
	}
	ourConf, err := cni.Conflist(cni.ConflistOptions{Network: net, StateDir: stateDir})
	if err != nil {
		return err
	}
	// The reference: bridge + host-local, masquerading, gateway on the bridge.
	br := "nacb-" + id
	refConf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "cbref" + id,
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": br, "isGateway": true, "ipMasq": true,
			"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": "10.206.251.0/24"}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}}, "dataDir": filepath.Join(tmp, "ipam")},
		}},
	})
	b.later(func() { sh("ip", "link", "del", br) })
	var sides []*side
	for _, s := range []struct {
		name string
		conf []byte
		path []string
	}{{"netalias", ourConf, []string{pdir}}, {"bridge+host-local", refConf, []string{*refDir}}} {
		l, err := libcni.ConfListFromBytes(s.conf)
		if err != nil {
			return err
		}
		sides = append(sides, &side{name: s.name, list: l, lib: libcni.NewCNIConfigWithCacheDir(s.path, filepath.Join(tmp, "cache-"+s.name), nil)})
	}
	for k, s := range sides {
		for i := range *n {
			name := fmt.Sprintf("nacb-%s-%d-%d", id, k, i)
			if err := sh("ip", "netns", "add", name); err != nil {
				return err
			}
			b.later(func() { sh("ip", "netns", "del", name) })
			s.ns = append(s.ns, "/run/netns/"+name)
		}
	}
	ctx := context.Background()
	rt := func(s *side, r, i int) *libcni.RuntimeConf {
		return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("cb%s-%d-%d", id, r, i), NetNS: s.ns[i], IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", fmt.Sprintf("p%d-%d", r, i)}}}
	}
	timed := func(into *[]time.Duration, f func() error) error {
		start := time.Now()
		err := f()
		*into = append(*into, time.Since(start))
		return err
	}
	for r := range *rounds {
		order := sides
		if r%2 == 1 {
			order = []*side{sides[1], sides[0]}
		}
		for _, s := range order {
			for i := range s.ns {
				if err := timed(&s.add, func() error { _, err := s.lib.AddNetworkList(ctx, s.list, rt(s, r, i)); return err }); err != nil {
					return fmt.Errorf("%s ADD: %w", s.name, err)
				}
			}
		}
		for _, s := range order {
			for i := range s.ns {
				if err := timed(&s.check, func() error { return s.lib.CheckNetworkList(ctx, s.list, rt(s, r, i)) }); err != nil {
					return fmt.Errorf("%s CHECK: %w", s.name, err)
				}
			}
		}
		for _, s := range order {
			for i := range s.ns {
				if err := timed(&s.del, func() error { return s.lib.DelNetworkList(ctx, s.list, rt(s, r, i)) }); err != nil {
					return fmt.Errorf("%s DEL: %w", s.name, err)
				}
			}
		}
	}
	fmt.Printf("per attachment, %d rounds x %d namespaces, libcni, one process per plugin call\n", *rounds, *n)
	fmt.Printf("%-8s %-20s %10s %10s\n", "op", "plugin", "median", "p90")
	for _, op := range []struct {
		name string
		get  func(*side) []time.Duration
	}{{"ADD", func(s *side) []time.Duration { return s.add }}, {"CHECK", func(s *side) []time.Duration { return s.check }}, {"DEL", func(s *side) []time.Duration { return s.del }}} {
		var med [2]time.Duration
		for k, s := range sides {
			d := op.get(s)
			med[k] = pct(d, 50)
			fmt.Printf("%-8s %-20s %10v %10v\n", op.name, s.name, med[k].Round(10*time.Microsecond), pct(d, 90).Round(10*time.Microsecond))
		}
		fmt.Printf("%-8s ratio netalias/reference (median): %.2fx\n", op.name, float64(med[0])/float64(med[1]))
	}
	return nil
}

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100]
}
