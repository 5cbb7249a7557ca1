package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netalias/netalias/netwatch"
	"github.com/netalias/netalias/netwatch/docker"
)

// engine drives one container engine's CLI against the same daemon the
// source under test follows.
type engine struct {
	bin string
	env []string // extra environment (Podman: CONTAINERS_CONF)
	// runArgs go into every `run` (Podman here needs NET_RAW for ping).
	runArgs []string
}

func (e engine) cmd(args ...string) *exec.Cmd {
	c := exec.Command(e.bin, args...)
	c.Env = append(os.Environ(), e.env...)
	return c
}

// must runs the CLI and fails the test on error; returns trimmed stdout.
func (e engine) must(t testing.TB, args ...string) string {
	t.Helper()
	c := e.cmd(args...)
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", e.bin, strings.Join(args, " "), err, out, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// networkIn creates a network (removed at cleanup) on a random /24 of
// base ("10.203" for Docker, "10.204" for Podman), trying another when the
// engine finds the subnet taken (say, left over by a crashed run). extra
// adds arguments that depend on the chosen third octet.
func (e engine) networkIn(t testing.TB, base string, extra func(third int) []string) (name string, third int) {
	t.Helper()
	name = natestName("natest")
	for try := 0; ; try++ {
		third = 1 + rand.IntN(250)
		args := []string{"network", "create", "--subnet", fmt.Sprintf("%s.%d.0/24", base, third)}
		if extra != nil {
			args = append(args, extra(third)...)
		}
		out, err := e.cmd(append(args, name)...).CombinedOutput()
		if err == nil {
			break
		}
		low := strings.ToLower(string(out))
		if try < 8 && (strings.Contains(low, "overlap") || strings.Contains(low, "already") || strings.Contains(low, "in use")) {
			continue
		}
		t.Fatalf("%s %s: %v\n%s", e.bin, strings.Join(args, " "), err, out)
	}
	t.Cleanup(func() {
		if out, err := e.cmd("network", "rm", name).CombinedOutput(); err != nil {
			t.Logf("%s network rm %s: %v\n%s", e.bin, name, err, out)
		}
	})
	return name, third
}

// run starts a detached container (removed at cleanup) and returns its id.
func (e engine) run(t testing.TB, name string, args ...string) string {
	t.Helper()
	t.Cleanup(func() { e.cmd("rm", "-f", name).Run() })
	all := append([]string{"run", "-d", "--name", name}, e.runArgs...)
	return e.must(t, append(all, args...)...)
}

// ip is the container's address on network.
func (e engine) ip(t testing.TB, ctr, network string) netip.Addr {
	t.Helper()
	s := e.must(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, ctr)
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("%s on %s: address %q: %v", ctr, network, s, err)
	}
	return a
}

// recSink is a netwatch.Sink that keeps what a source published.
type recSink struct {
	mu       sync.Mutex
	nets     map[string]*netwatch.Network
	stale    bool
	replaces int
	changed  chan struct{}
	updated  map[string]time.Time // when each network was last published
}

func newRecSink() *recSink {
	return &recSink{nets: map[string]*netwatch.Network{}, changed: make(chan struct{}, 1), updated: map[string]time.Time{}}
}

func (r *recSink) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recSink) Replace(_ string, nets []*netwatch.Network) {
	r.mu.Lock()
	r.nets = map[string]*netwatch.Network{}
	for _, n := range nets {
		r.nets[n.Name] = n
	}
	r.replaces++
	r.mu.Unlock()
	r.poke()
}

func (r *recSink) Update(_ string, n *netwatch.Network) {
	r.mu.Lock()
	r.nets[n.Name] = n
	r.updated[n.Name] = time.Now()
	r.mu.Unlock()
	r.poke()
}

func (r *recSink) Remove(_ string, name string) {
	r.mu.Lock()
	delete(r.nets, name)
	r.updated[name] = time.Now()
	r.mu.Unlock()
	r.poke()
}

func (r *recSink) SetStale(_ string, stale bool) {
	r.mu.Lock()
	r.stale = stale
	r.mu.Unlock()
	r.poke()
}

// lookup answers like the DNS server would for NAME.NETWORK: every
// address of endpoints named or aliased name.
func (r *recSink) lookup(name, network string) []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []netip.Addr
	n := r.nets[network]
	if n == nil {
		return nil
	}
	for _, e := range n.Endpoints {
		if e.Name == name || slices.Contains(e.Aliases, name) {
			out = append(out, e.IPv4)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (r *recSink) endpoint(name, network string) (netwatch.Endpoint, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.nets[network]; n != nil {
		for _, e := range n.Endpoints {
			if e.Name == name {
				return e, true
			}
		}
	}
	return netwatch.Endpoint{}, false
}

func (r *recSink) isStale() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stale
}

// eventually polls cond every 10 ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startSource runs a docker source for endpoint into a recording sink
// until the test ends.
func startSource(t testing.TB, endpoint string) (*docker.Source, *recSink) {
	t.Helper()
	src, err := docker.NewSource(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	src.Log = netwatch.Printf(t.Logf)
	sink := newRecSink()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := src.Run(ctx, sink); err != nil {
			t.Errorf("source Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return src, sink
}

// sockProxy forwards a unix socket to another one and can be cut (listener
// closed, live connections dropped) and restored, to play a daemon that
// goes away and comes back without touching the real one.
type sockProxy struct {
	path, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]bool
}

func newSockProxy(t testing.TB, target string) *sockProxy {
	t.Helper()
	p := newSockProxyDown(t, target)
	p.restore(t)
	return p
}

// newSockProxyDown is a proxy whose socket does not exist until restore.
func newSockProxyDown(t testing.TB, target string) *sockProxy {
	t.Helper()
	p := &sockProxy{path: filepath.Join(t.TempDir(), "engine.sock"), target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(p.cut)
	return p
}

func (p *sockProxy) endpoint() string { return "unix://" + p.path }

func (p *sockProxy) restore(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
}

func (p *sockProxy) forward(c net.Conn) {
	up, err := net.Dial("unix", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // cut meanwhile
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	go func() { io.Copy(up, c); up.Close() }()
	io.Copy(c, up)
	c.Close()
}

// cut closes the socket (its file goes too) and every live connection.
func (p *sockProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
	if _, err := os.Stat(p.path); err == nil || !errors.Is(err, os.ErrNotExist) {
		os.Remove(p.path)
	}
}

// checkNetwork asserts the subnet and gateway the source published for net.
func (r *recSink) checkNetwork(t *testing.T, net, subnet, gateway string) {
	t.Helper()
	r.mu.Lock()
	n := r.nets[net]
	r.mu.Unlock()
	if n == nil {
		t.Errorf("no network record for %s", net)
		return
	}
	if n.Subnet != netip.MustParsePrefix(subnet) || n.Gateway != netip.MustParseAddr(gateway) {
		t.Errorf("network record subnet %v gateway %v, want %s and %s", n.Subnet, n.Gateway, subnet, gateway)
	}
}
