package test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/netalias/netalias/cluster"
	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/netwatch"
	etcdsrc "github.com/netalias/netalias/netwatch/etcd"
)

// Cluster tests: hosts are network namespaces "nacl-hN-RND" whose eth0
// hangs on an underlay bridge, 10.212.240.0/24 (host N at .1N); no other
// test uses 10.212.0.0/16 or the "nacl-" names. The bridge lives in a
// namespace of its own ("nacl-ul-RND"): in the root namespace Docker's
// FORWARD policy DROP would see the bridged underlay traffic through
// br_netfilter. The test process reaches it through veth "nacl-r-RND"
// (.1). Each host runs its own etcd member (the netalias-etcd helper
// binary, through `ip netns exec`). Run under the kernel lock:
//
//	flock /tmp/netalias-kernel.lock go test -run Cluster ./test/
const clUnderlay = "10.212.240"

// etcdBinary builds ./cmd/netalias-etcd once per run (binaries_test.go
// knows only netalias and coredns).
var (
	etcdBinOnce sync.Once
	etcdBinPath string
	etcdBinErr  error
)

func etcdBinary(t testing.TB) string {
	t.Helper()
	etcdBinOnce.Do(func() {
		etcdBinPath = filepath.Join(binDir, "netalias-etcd")
		cmd := exec.Command("go", "build", "-o", etcdBinPath, "./cmd/netalias-etcd")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			etcdBinErr = &buildError{name: "netalias-etcd", out: string(b), err: err}
		}
	})
	if etcdBinErr != nil {
		t.Fatal(etcdBinErr)
	}
	return etcdBinPath
}

// clHost is one host: a namespace with an underlay address and an etcd
// member.
type clHost struct {
	name    string // cluster host name: h1, h2, …
	ns      string
	ip      string
	dataDir string
	etcd    *exec.Cmd
	exited  chan struct{}
}

func (h *clHost) clientURL() string { return "http://" + h.ip + ":2379" }
func (h *clHost) peerURL() string   { return "http://" + h.ip + ":2380" }

// clTopo is the whole topology; everything it made goes at cleanup, even
// when the test fails midway.
type clTopo struct {
	t     *testing.T
	rnd   string
	ul    string // underlay namespace, holding bridge br0
	root  string // root-namespace veth onto the underlay
	hosts []*clHost
	// containers are namespaces of container endpoints (any host).
	containers []string
}

func clRand() string {
	var b [3]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func clRun(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// newClusterTopo makes n hosts on an underlay bridge. Members are not
// started (startEtcd).
func newClusterTopo(t *testing.T, n int) *clTopo {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip")
	c := &clTopo{t: t, rnd: clRand()}
	c.ul, c.root = "nacl-ul-"+c.rnd, "nacl-r-"+c.rnd
	t.Cleanup(c.cleanup)
	clRun(t, "ip", "netns", "add", c.ul)
	clRun(t, "ip", "-n", c.ul, "link", "add", "br0", "type", "bridge")
	clRun(t, "ip", "-n", c.ul, "link", "set", "br0", "up")
	clRun(t, "ip", "link", "add", c.root, "type", "veth", "peer", "name", "root", "netns", c.ul)
	clRun(t, "ip", "-n", c.ul, "link", "set", "root", "master", "br0", "up")
	clRun(t, "ip", "addr", "add", clUnderlay+".1/24", "dev", c.root)
	clRun(t, "ip", "link", "set", c.root, "up")
	for i := 1; i <= n; i++ {
		h := &clHost{
			name:    fmt.Sprintf("h%d", i),
			ns:      fmt.Sprintf("nacl-h%d-%s", i, c.rnd),
			ip:      fmt.Sprintf("%s.%d", clUnderlay, 10+i),
			dataDir: t.TempDir(),
		}
		c.hosts = append(c.hosts, h)
		clRun(t, "ip", "netns", "add", h.ns)
		port := fmt.Sprintf("h%d", i)
		clRun(t, "ip", "-n", c.ul, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		clRun(t, "ip", "-n", c.ul, "link", "set", port, "master", "br0", "up")
		clRun(t, "ip", "-n", h.ns, "addr", "add", h.ip+"/24", "dev", "eth0")
		clRun(t, "ip", "-n", h.ns, "link", "set", "lo", "up")
		clRun(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
		// A silent partition leaves the etcd members' TCP streams open,
		// retransmitting with exponential backoff: with the default 15
		// retries a stream stays stale ~20 s past a 30 s partition's heal
		// and the healed member hears nothing meanwhile. 5 retries end a
		// stale stream after ~13 s, so a new one forms at the heal.
		clRun(t, "ip", "netns", "exec", h.ns, "sysctl", "-qw", "net.ipv4.tcp_retries2=5")
	}
	return c
}

func (c *clTopo) cleanup() {
	for _, h := range c.hosts {
		c.killEtcd(h)
	}
	// Deleting a veth deletes its peer; deleting a namespace deletes its
	// veth ends (asynchronously: so the root one goes first, by name).
	if out, err := exec.Command("ip", "link", "del", c.root).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find") {
		c.t.Errorf("cleanup: ip link del %s: %v: %s", c.root, err, out)
	}
	for _, ns := range c.containers {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			c.t.Errorf("cleanup: ip netns del %s: %v: %s", ns, err, out)
		}
		os.RemoveAll(filepath.Join("/etc/netns", ns))
	}
	for _, ns := range append(c.hostNamespaces(), c.ul) {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			c.t.Errorf("cleanup: ip netns del %s: %v: %s", ns, err, out)
		}
	}
	if left := c.leftovers(); len(left) > 0 {
		c.t.Errorf("left behind after cleanup:\n%s", strings.Join(left, "\n"))
	}
}

// leftovers lists what of this topology is still there: namespaces,
// root-namespace links, resolver directories.
func (c *clTopo) leftovers() []string {
	var out []string
	ns, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	links, _ := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	for _, l := range strings.Split(string(ns)+string(links), "\n") {
		if strings.Contains(l, c.rnd) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	if m, _ := filepath.Glob("/etc/netns/nacl-*-" + c.rnd); len(m) > 0 {
		out = append(out, m...)
	}
	return out
}

func (c *clTopo) hostNamespaces() []string {
	var out []string
	for _, h := range c.hosts {
		out = append(out, h.ns)
	}
	return out
}

// startEtcd starts every host's member as one new cluster and waits until
// each answers.
func (c *clTopo) startEtcd() {
	c.t.Helper()
	bin := etcdBinary(c.t)
	var initial []string
	for _, h := range c.hosts {
		initial = append(initial, h.name+"="+h.peerURL())
	}
	for _, h := range c.hosts {
		log, err := os.Create(filepath.Join(h.dataDir, "..", h.name+"-etcd.log"))
		if err != nil {
			c.t.Fatal(err)
		}
		cmd := exec.Command("ip", "netns", "exec", h.ns, bin,
			"--name", h.name, "--data-dir", filepath.Join(h.dataDir, "etcd"),
			"--client-url", h.clientURL(), "--peer-url", h.peerURL(),
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new")
		cmd.Stdout, cmd.Stderr = log, log
		// Its own process group: a kill reaches nothing of ours.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			c.t.Fatalf("start etcd on %s: %v", h.name, err)
		}
		h.etcd, h.exited = cmd, make(chan struct{})
		go func(h *clHost, log *os.File) { cmd.Wait(); log.Close(); close(h.exited) }(h, log)
	}
	for _, h := range c.hosts {
		cli := c.client(h)
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := cli.Get(ctx, "probe")
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(filepath.Join(h.dataDir, "..", h.name+"-etcd.log"))
				c.t.Fatalf("etcd member %s not answering after 60s: %v\n%s", h.name, err, b)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// killEtcd SIGKILLs h's member (host death) and waits for it.
func (c *clTopo) killEtcd(h *clHost) {
	if h.etcd == nil || h.etcd.Process == nil {
		return
	}
	h.etcd.Process.Kill()
	select {
	case <-h.exited:
	case <-time.After(10 * time.Second):
		c.t.Errorf("etcd member %s (pid %d) did not exit after SIGKILL", h.name, h.etcd.Process.Pid)
	}
	h.etcd = nil
}

// client returns a client of h's member only, closed at the end.
func (c *clTopo) client(h *clHost) *clientv3.Client {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{h.clientURL()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// moveLeader makes to's member the leader (asked of the current one).
func (c *clTopo) moveLeader(to *clHost) {
	c.t.Helper()
	cur := c.leader(c.client(to))
	if cur == to {
		return
	}
	if cur == nil {
		c.t.Fatal("no etcd leader")
	}
	lc := c.client(cur)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := lc.Status(ctx, to.clientURL())
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := lc.MoveLeader(ctx, st.Header.MemberId); err != nil {
		c.t.Fatalf("move etcd leadership %s → %s: %v", cur.name, to.name, err)
	}
}

// leader returns the host whose member leads.
func (c *clTopo) leader(cli *clientv3.Client) *clHost {
	c.t.Helper()
	for _, h := range c.hosts {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx, h.clientURL())
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return h
		}
	}
	return nil
}

// clPublisher is a host's session and publisher over a desired set the
// test edits (the agent's state directory stands behind this seam).
type clPublisher struct {
	mu      sync.Mutex
	desired cluster.Desired
	session *cluster.Session
	pub     *cluster.Publisher
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

func clStartPublisher(t *testing.T, cli *clientv3.Client, host string, ttl time.Duration) *clPublisher {
	p := &clPublisher{desired: cluster.Desired{Gateways: map[string]cluster.GatewayRecord{}, Endpoints: map[cluster.EndpointID]cluster.EndpointRecord{}}}
	p.session = cluster.NewSession(cli, ttl, nil)
	p.pub = cluster.NewPublisher(cli, cluster.Keys{Prefix: cluster.DefaultPrefix}, host, p.session, p.get, nil)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.done.Add(2)
	go func() { defer p.done.Done(); p.session.Run(ctx) }()
	go func() { defer p.done.Done(); p.pub.Run(ctx) }()
	t.Cleanup(p.stop)
	return p
}

func (p *clPublisher) get() (*cluster.Desired, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := &cluster.Desired{Host: p.desired.Host, Gateways: map[string]cluster.GatewayRecord{}, Endpoints: map[cluster.EndpointID]cluster.EndpointRecord{}}
	for k, v := range p.desired.Gateways {
		d.Gateways[k] = v
	}
	for k, v := range p.desired.Endpoints {
		d.Endpoints[k] = v
	}
	return d, nil
}

// connect adds an endpoint and notifies the publisher.
func (p *clPublisher) connect(net, id, name, ip string) {
	p.mu.Lock()
	p.desired.Endpoints[cluster.EndpointID{Net: net, ID: id}] = cluster.EndpointRecord{Name: name, IPv4: ip, Container: "/run/netns/" + name}
	p.mu.Unlock()
	p.pub.Notify()
}

// stop ends the session without revoking (a killed agent).
func (p *clPublisher) stop() { p.cancel(); p.done.Wait() }

// clStartSource runs host's etcd source into a fresh store.
func clStartSource(t *testing.T, cli *clientv3.Client, host string) *netwatch.Store {
	st := netwatch.NewStoreWith(netwatch.StoreOptions{Expected: []string{etcdsrc.SourceName}})
	src := etcdsrc.New(cli, cluster.Keys{Prefix: cluster.DefaultPrefix}, host)
	src.Log = netwatch.Printf(t.Logf)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx, st) }()
	t.Cleanup(func() { cancel(); <-done })
	return st
}

// clHas reports whether store st answers NAME.NET with ip.
func clHas(st *netwatch.Store, net, name, ip string) bool {
	v := st.Snapshot().Network(net)
	if v == nil {
		return false
	}
	rs := v.Lookup(name)
	if rs == nil {
		return false
	}
	for _, a := range rs.V4 {
		if a.String() == ip {
			return true
		}
	}
	return false
}

func clPercentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}

// partition drops every packet of h except on loopback (silent, unlike a
// link going down) until heal is called; the table goes with the
// namespace anyway.
func (c *clTopo) partition(h *clHost) (heal func()) {
	c.t.Helper()
	testenv.RequireCommand(c.t, "nft")
	rules := "table inet nacl_part {\n" +
		" chain in { type filter hook input priority -300; policy accept; iif != \"lo\" drop; }\n" +
		" chain out { type filter hook output priority -300; policy accept; oif != \"lo\" drop; }\n}\n"
	cmd := exec.Command("ip", "netns", "exec", h.ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("partition %s: %v: %s", h.name, err, out)
	}
	return func() {
		clRun(c.t, "ip", "netns", "exec", h.ns, "nft", "delete", "table", "inet", "nacl_part")
	}
}
