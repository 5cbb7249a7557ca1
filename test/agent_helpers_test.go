package test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/state"
)

// Agent tests use subnets 10.201.1.0/24 … 10.201.99.0/24 (one block per
// test from this counter), fd00:201:N::/64 for IPv6, namespaces "nat-…".
var agSubnetCounter atomic.Int32

func agNextSubnet() (v4 string, v6 string, n int) {
	n = int(agSubnetCounter.Add(1))
	if n > 99 {
		panic("agent tests ran out of test subnets")
	}
	return fmt.Sprintf("10.201.%d.0/24", n), fmt.Sprintf("fd00:201:%x::/64", n), n
}

func agRand() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// agentEnv is one state directory driven through the real binary.
type agentEnv struct {
	t    *testing.T
	bin  string
	dir  string
	pool string // NETALIAS_ADDRESS_POOLS of this test
}

func newAgentEnv(t *testing.T) *agentEnv {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	e := &agentEnv{t: t, bin: binary(t, "netalias"), dir: t.TempDir()}
	// Any automatic subnet must come from our range, never from others'.
	_, _, n := agNextSubnet()
	e.pool = fmt.Sprintf("10.201.%d.0/24:26", n)
	t.Setenv("NETALIAS_ADDRESS_POOLS", e.pool)
	return e
}

type agResult struct {
	stdout, stderr string
	code           int
}

func (e *agentEnv) run(args ...string) agResult {
	e.t.Helper()
	cmd := exec.Command(e.bin, append([]string{"--state-dir", e.dir}, args...)...)
	var o, er bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &er
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run netalias %v: %v", args, err)
	}
	return agResult{o.String(), er.String(), code}
}

// must runs netalias and fails the test unless it succeeds.
func (e *agentEnv) must(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("netalias %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// network creates a network and removes it (with --force) at cleanup.
func (e *agentEnv) network(name string, args ...string) {
	e.t.Helper()
	e.must(append(append([]string{"network", "create"}, args...), name)...)
	e.t.Cleanup(func() {
		r := e.run("network", "rm", "--force", name)
		if r.code != 0 && !strings.Contains(r.stderr, "not found") {
			e.t.Errorf("cleanup: network rm %s: %s", name, r.stderr)
		}
	})
}

func (e *agentEnv) file(network string) *state.File {
	e.t.Helper()
	f, err := state.Read(state.NetworkPath(e.dir, network))
	if err != nil {
		e.t.Fatal(err)
	}
	return f
}

func (e *agentEnv) endpoint(network, name string) state.Endpoint {
	e.t.Helper()
	for _, ep := range e.file(network).Endpoints {
		if ep.Name == name {
			return ep
		}
	}
	e.t.Fatalf("no endpoint %q on network %q", name, network)
	return state.Endpoint{}
}

// netns makes a named namespace and deletes it at cleanup.
func agNetns(t *testing.T) string {
	t.Helper()
	name := "nat-" + agRand()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			exec.Command("ip", "netns", "del", name).Run()
		}
	})
	return name
}

func agExec(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

func agPing(ns, addr string) error {
	args := []string{"ping", "-c1", "-W1", addr}
	if strings.Contains(addr, ":") {
		args = []string{"ping", "-6", "-c1", "-W1", addr}
	}
	out, err := agExec(ns, args...)
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// agLinks lists the host's interfaces.
func agLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 {
			n := strings.TrimSuffix(f[1], ":")
			if i := strings.IndexByte(n, '@'); i >= 0 {
				n = n[:i]
			}
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

func agHasLink(t *testing.T, name string) bool {
	for _, n := range agLinks(t) {
		if n == name {
			return true
		}
	}
	return false
}

// agEventually polls cond every 20 ms for up to d.
func agEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agDigest returns every file of the state directory's networks/ with
// its content, to prove a failed command changed nothing.
func agDigest(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	ents, _ := os.ReadDir(filepath.Join(dir, "networks"))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, "networks", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

func agNft(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("nft", "list", "ruleset").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// ourLinks lists the host interfaces netalias names (bridges na-*, veths
// nav*/nax*): other engineers' tests create links concurrently, ours are
// the ones a netalias bug could leave behind.
func agOurLinks(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, n := range agLinks(t) {
		if strings.HasPrefix(n, "na-") || strings.HasPrefix(n, "nav") || strings.HasPrefix(n, "nax") {
			out = append(out, n)
		}
	}
	return out
}

// ourNft returns what this state directory owns in nftables: its table
// and its marked rules in the host's FORWARD chains.
func (e *agentEnv) ourNft() string {
	e.t.Helper()
	abs, _ := filepath.Abs(e.dir)
	sum := sha256.Sum256([]byte(abs))
	table := "netalias-" + hex.EncodeToString(sum[:4])
	var b strings.Builder
	if out, err := exec.Command("nft", "list", "table", "inet", table).Output(); err == nil {
		b.Write(out)
	}
	for _, l := range strings.Split(agNft(e.t), "\n") {
		if strings.Contains(l, "netalias:"+table+":") {
			if i := strings.Index(l, "counter packets"); i >= 0 {
				l = l[:i] // counters move with traffic
			}
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func agJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON %q: %v", s, err)
	}
	return v
}
