package test

// The netalias binary as a CNI plugin, driven by real runtimes: libcni
// (the code Podman and containerd call) through whole lifecycles and in
// chains with Debian's reference plugins, and Podman 4.3 on its CNI
// backend next to `netalias connect`.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netalias/netalias/agent/firewall"
	"github.com/netalias/netalias/cni"
	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/state"
)

// cniLib is a runtime (libcni with a private cache) over the plugin
// directories.
func cniLib(t testing.TB, paths ...string) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(paths, t.TempDir(), nil)
}

// cniList is a generated conflist for a netalias network of stateDir;
// edit, when set, changes its JSON first.
func cniList(t testing.TB, name, stateDir, network, version string, chain []string, edit func(plugins []map[string]any)) *libcni.NetworkConfigList {
	t.Helper()
	b, err := cni.Conflist(cni.ConflistOptions{Network: network, Name: name, StateDir: stateDir, CNIVersion: version, Plugins: chain})
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var plugins []map[string]any
		for _, p := range m["plugins"].([]any) {
			plugins = append(plugins, p.(map[string]any))
		}
		edit(plugins)
		if b, err = json.Marshal(m); err != nil {
			t.Fatal(err)
		}
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatalf("conflist %s: %v", b, err)
	}
	return l
}

func cniRT(id, ifname, ns, podName string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: ns, IfName: ifname}
	if podName != "" {
		rt.Args = [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", podName}}
	}
	return rt
}

// cniCode is the spec's error code of a plugin failure (0: none).
func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// TestCNILibcniLifecycle: libcni drives ADD, CHECK, STATUS, GC and DEL
// through the real plugin and kernel: the Result matches the state, an
// interface name taken in the namespace fails cleanly, a second interface
// into the same namespace is legal, CHECK names a deleted address, GC
// keeps only the valid attachments, DEL is idempotent.
func TestCNILibcniLifecycle(t *testing.T) {
	e := newAgentEnv(t)
	dir := cniPluginDir(t)
	net := "cni" + agRand()
	e.network(net)
	list := cniList(t, net, e.dir, net, "1.1.0", nil, nil)
	lib := cniLib(t, dir)
	ctx := context.Background()
	ns := "/run/netns/" + agNetns(t)

	r, err := lib.AddNetworkList(ctx, list, cniRT("c1", "eth0", ns, "web"))
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	ep := e.endpoint(net, "web")
	if len(res.IPs) != 1 || res.IPs[0].Address.IP.String() != ep.IPv4.String() || res.Interfaces[1].Sandbox != ns ||
		res.Interfaces[1].Mac != ep.MAC || len(res.Routes) != 1 || res.DNS.Nameservers[0] != e.file(net).Network.Gateway.String() {
		t.Errorf("Result %+v does not match the endpoint %+v", res, ep)
	}
	if _, err := os.Stat("/etc/netns/" + filepath.Base(ns)); err == nil {
		t.Errorf("a resolver file was written under /etc/netns for a CNI namespace")
	}

	before := agDigest(t, e.dir)
	if _, err := lib.AddNetworkList(ctx, list, cniRT("c2", "eth0", ns, "db")); cniCode(err) != cni.CodeExists || !strings.Contains(err.Error(), "eth0") {
		t.Errorf("ADD of a taken interface name: %v, want code %d naming eth0", err, cni.CodeExists)
	}
	if after := agDigest(t, e.dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the refused ADD changed the state:\n%v\nwas\n%v", after, before)
	}

	if _, err := lib.AddNetworkList(ctx, list, cniRT("c1", "eth1", ns, "web-b")); err != nil {
		t.Fatalf("second ADD into the namespace as eth1: %v", err)
	}
	if out, err := agExec(filepath.Base(ns), "ip", "-o", "-4", "addr", "show", "eth1"); err != nil || !strings.Contains(out, e.endpoint(net, "web-b").IPv4.String()) {
		t.Errorf("eth1 in the namespace: %v %s", err, out)
	}
	if err := lib.CheckNetworkList(ctx, list, cniRT("c1", "eth0", ns, "web")); err != nil {
		t.Errorf("CHECK of a whole attachment: %v", err)
	}
	if err := lib.GetStatusNetworkList(ctx, list); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	bits := fmt.Sprintf("/%d", e.file(net).Network.Subnet.Bits())
	if out, err := agExec(filepath.Base(ns), "ip", "addr", "del", ep.IPv4.String()+bits, "dev", "eth0"); err != nil {
		t.Fatalf("ip addr del: %v %s", err, out)
	}
	err = lib.CheckNetworkList(ctx, list, cniRT("c1", "eth0", ns, "web"))
	if cniCode(err) != cni.CodeDamaged || !strings.Contains(err.Error(), "address "+ep.IPv4.String()+bits+" is missing") ||
		!strings.Contains(err.Error(), "default route via") {
		t.Errorf("CHECK after the address was deleted: %v, want code %d naming the address and the default route", err, cni.CodeDamaged)
	}

	// GC keeps c1/eth1 only (libcni DELs its cached c1/eth0, then the
	// plugin's GC runs).
	if err := lib.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "c1", IfName: "eth1"}}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if eps := e.file(net).Endpoints; len(eps) != 1 || eps[0].Name != "web-b" {
		t.Errorf("endpoints after GC: %+v", eps)
	}
	// The firewall rules gone (a firewall reload): CHECK names them.
	table := firewall.TableName(e.dir, state.DefaultDir)
	if out, err := exec.Command("nft", "delete", "table", "inet", table).CombinedOutput(); err != nil {
		t.Fatalf("nft delete table %s: %v %s", table, err, out)
	}
	err = lib.CheckNetworkList(ctx, list, cniRT("c1", "eth1", ns, "web-b"))
	if cniCode(err) != cni.CodeDamaged || !strings.Contains(err.Error(), "firewall rules") {
		t.Errorf("CHECK without the firewall rules: %v, want code %d naming them", err, cni.CodeDamaged)
	}
	e.network("rs" + agRand()) // a network change re-syncs the rules
	if err := lib.CheckNetworkList(ctx, list, cniRT("c1", "eth1", ns, "web-b")); err != nil {
		t.Errorf("CHECK once the rules are back: %v", err)
	}
	for i := range 2 {
		if err := lib.DelNetworkList(ctx, list, cniRT("c1", "eth1", ns, "")); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if err := lib.DelNetworkList(ctx, list, cniRT("never", "eth0", "", "")); err != nil {
		t.Errorf("DEL of an ID never added, no netns: %v", err)
	}
	// DEL after the namespace was deleted.
	ns2 := agNetns(t)
	if _, err := lib.AddNetworkList(ctx, list, cniRT("c3", "eth0", "/run/netns/"+ns2, "gone")); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "del", ns2).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v %s", err, out)
	}
	if err := lib.DelNetworkList(ctx, list, cniRT("c3", "eth0", "/run/netns/"+ns2, "")); err != nil {
		t.Errorf("DEL after the namespace was deleted: %v", err)
	}
	if eps := e.file(net).Endpoints; len(eps) != 0 {
		t.Errorf("endpoints after DEL: %+v", eps)
	}
	agEventually(t, 5*time.Second, "host veths gone", func() bool {
		return !agHasLink(t, ep.HostVeth) && len(e.file(net).PendingDelete) == 0
	})
}

// TestCNIChainReferencePlugins: netalias first, then Debian's tuning
// (promiscuous mode), bandwidth, portmap and firewall. The prevResult
// flows through every plugin, CHECK passes through all of them, a host
// port mapped by portmap reaches a server in the container over
// loopback, and DEL (in reverse) removes portmap's rules and our veth.
func TestCNIChainReferencePlugins(t *testing.T) {
	e := newAgentEnv(t)
	dir := cniPluginDir(t)
	ref := cniReferencePlugins(t)
	testenv.RequireCommand(t, "iptables-save")
	net := "cni" + agRand()
	e.network(net)
	promisc := func(ps []map[string]any) { ps[1]["promisc"] = true }
	list := cniList(t, net, e.dir, net, "1.0.0", []string{"tuning", "bandwidth", "portmap", "firewall"}, promisc)
	// Debian's portmap (1.1) fails CHECK on an IPv4-only container when
	// ip6tables exists (containernetworking/plugins#819): CHECK runs over
	// the same chain without it (same name: libcni's cached Result).
	checkList := cniList(t, net, e.dir, net, "1.0.0", []string{"tuning", "bandwidth", "firewall"}, promisc)
	lib := cniLib(t, dir, ref)
	ctx := context.Background()
	nsName := agNetns(t)
	ns := "/run/netns/" + nsName
	port := 20000 + rand.IntN(20000)
	id := "chain" + agRand()
	rt := cniRT(id, "eth0", ns, "web")
	rt.CapabilityArgs = map[string]any{
		"portMappings": []map[string]any{{"hostPort": port, "containerPort": 8080, "protocol": "tcp"}},
		"bandwidth":    map[string]any{"ingressRate": 100_000_000, "ingressBurst": 1_000_000},
	}
	r, err := lib.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD through the chain: %v", err)
	}
	t.Cleanup(func() { lib.DelNetworkList(ctx, list, rt) })
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	ep := e.endpoint(net, "web")
	if len(res.Interfaces) < 2 || res.Interfaces[0].Name != ep.HostVeth || len(res.IPs) != 1 {
		t.Errorf("the chain's final Result lost ours: %+v", res)
	}
	if out, _ := agExec(nsName, "ip", "link", "show", "eth0"); !strings.Contains(out, "PROMISC") {
		t.Errorf("tuning did not act on our eth0: %s", out)
	}
	if out, _ := exec.Command("tc", "qdisc", "show", "dev", ep.HostVeth).CombinedOutput(); !strings.Contains(string(out), "tbf") {
		t.Errorf("bandwidth did not shape our host veth %s: %s", ep.HostVeth, out)
	}
	srv := exec.Command("ip", "netns", "exec", nsName, "busybox", "nc", "-ll", "-p", "8080", "-e", "echo", "hello-from-"+id)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	var got string
	agEventually(t, 5*time.Second, "the mapped host port answers", func() bool {
		c, err := cniDial(fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		got, _ = bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(got) == "hello-from-"+id
	})
	if err := lib.CheckNetworkList(ctx, checkList, rt); err != nil {
		t.Errorf("CHECK through the chain: %v", err)
	}
	if err := lib.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL through the chain: %v", err)
	}
	if out, _ := exec.Command("iptables-save").CombinedOutput(); strings.Contains(string(out), id) {
		t.Errorf("portmap or firewall rules of %s left after DEL", id)
	}
	if n := len(e.file(net).Endpoints); n != 0 {
		t.Errorf("%d endpoints left after DEL", n)
	}
}

func cniDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }

// TestCNIPodmanAndConnect: a namespace attached with `netalias connect`
// and a Podman container attached through the CNI plugin, on one network,
// resolve each other through our CoreDNS at the gateway and ping each
// other.
func TestCNIPodmanAndConnect(t *testing.T) {
	e := newAgentEnv(t)
	dir := cniPluginDir(t)
	p := newPodmanCNI(t, dir, cniReferencePlugins(t))
	net := "cni" + agRand()
	e.network(net)
	gw := e.file(net).Network.Gateway.String()
	dnCoreDNS(t, dnCorefile(t, e.dir, dnsAddr, gw))
	confs := cniConfDir{dir: p.netDir}
	confs.netalias(t, net, e.dir, net, "1.0.0")
	ns := agNetns(t)
	e.must("connect", "--name", "host1", net, ns)
	t.Cleanup(func() { e.run("disconnect", net, ns) })
	host1 := e.endpoint(net, "host1").IPv4.String()
	img := p.busybox()
	p.must("run", "-d", "--name", "pod1", "--network", net, img, "sleep", "300")
	pod1 := e.endpoint(net, "pod1").IPv4.String()
	if out := p.must("exec", "pod1", "nslookup", "host1."+net); !strings.Contains(out, host1) {
		t.Errorf("the Podman container does not resolve host1.%s to %s: %s", net, host1, out)
	}
	if out := p.must("exec", "pod1", "ping", "-c1", "-W2", host1); !strings.Contains(out, "1 packets received") {
		t.Errorf("the Podman container cannot ping %s: %s", host1, out)
	}
	if got := dnDig(t, ns, "@"+gw, "+short", "pod1."+net); got != pod1 {
		t.Errorf("the connected namespace resolves pod1.%s to %q, want %s", net, got, pod1)
	}
	if err := agPing(ns, pod1); err != nil {
		t.Errorf("the connected namespace cannot ping the Podman container: %v", err)
	}
	p.must("rm", "-f", "-t", "0", "pod1")
	if n := len(e.file(net).Endpoints); n != 1 {
		t.Errorf("%d endpoints after podman rm, want host1 only", n)
	}
}

// TestCNIStatusStateDirReadOnly: STATUS answers 50 naming the state
// directory when it cannot be written (a read-only bind mount in a
// private mount namespace), and 0 once it can.
func TestCNIStatusStateDirReadOnly(t *testing.T) {
	e := newAgentEnv(t)
	dir := cniPluginDir(t)
	testenv.RequireCommand(t, "unshare")
	net := "cni" + agRand()
	e.network(net)
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"netalias","network":%q,"stateDir":%q}`, net, net, e.dir)
	status := func(readOnly bool) (string, error) {
		script := `exec "$0"`
		if readOnly {
			script = `mount --bind -o ro "$NA_DIR" "$NA_DIR" && exec "$0"`
		}
		c := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, filepath.Join(dir, "netalias"))
		c.Env = append(os.Environ(), "CNI_COMMAND=STATUS", "CNI_PATH="+dir, "NA_DIR="+e.dir)
		c.Stdin = strings.NewReader(conf)
		out, err := c.Output()
		return string(out), err
	}
	if out, err := status(false); err != nil {
		t.Fatalf("STATUS of a healthy network: %v %s", err, out)
	}
	out, err := status(true)
	var res struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	if err == nil || json.Unmarshal([]byte(out), &res) != nil || res.Code != 50 || !strings.Contains(res.Msg, "not writable") || !strings.Contains(res.Msg, e.dir) {
		t.Errorf("STATUS with a read-only state directory: %v, %s; want code 50 naming %s", err, out, e.dir)
	}
}

// TestCNIParallelAdds: eight ADDs at once through libcni (a runtime
// starting a pod's worth of containers) all succeed with distinct
// addresses; eight DELs at once leave nothing.
func TestCNIParallelAdds(t *testing.T) {
	e := newAgentEnv(t)
	dir := cniPluginDir(t)
	net := "cni" + agRand()
	e.network(net)
	list := cniList(t, net, e.dir, net, "1.1.0", nil, nil)
	lib := cniLib(t, dir)
	ctx := context.Background()
	const k = 8
	rts := make([]*libcni.RuntimeConf, k)
	for i := range rts {
		rts[i] = cniRT(fmt.Sprintf("par%d", i), "eth0", "/run/netns/"+agNetns(t), fmt.Sprintf("par%d", i))
	}
	run := func(op string, f func(*libcni.RuntimeConf) error) {
		errs := make(chan error, k)
		for _, rt := range rts {
			go func() { errs <- f(rt) }()
		}
		for range k {
			if err := <-errs; err != nil {
				t.Errorf("parallel %s: %v", op, err)
			}
		}
	}
	run("ADD", func(rt *libcni.RuntimeConf) error { _, err := lib.AddNetworkList(ctx, list, rt); return err })
	seen := map[string]bool{}
	for _, ep := range e.file(net).Endpoints {
		seen[ep.IPv4.String()] = true
	}
	if len(seen) != k {
		t.Errorf("%d distinct addresses for %d parallel ADDs", len(seen), k)
	}
	run("DEL", func(rt *libcni.RuntimeConf) error { return lib.DelNetworkList(ctx, list, rt) })
	if n := len(e.file(net).Endpoints); n != 0 {
		t.Errorf("%d endpoints left after parallel DELs", n)
	}
}
