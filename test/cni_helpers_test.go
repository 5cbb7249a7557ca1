package test

// The CNI harness (issue 10): Debian's reference plugins, cnitool, the
// netalias binary on a CNI_PATH, conflists, and Podman on its CNI backend
// in a private root. The netalias binary is the plugin when CNI_COMMAND is
// set (cmd/netalias/cni.go, over agent.CNIBackend).
//
// Address space: CNI tests that make networks of their own (reference
// bridge, Podman) use 10.206.N.0/24 (N from cniNextSubnet); netalias
// networks come from agentEnv's 10.201.N.0/24 as in the agent tests.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netalias/netalias/cni"
	"github.com/netalias/netalias/internal/testenv"
)

// debianCNIDir is where Debian's containernetworking-plugins puts the
// reference plugins (bridge, host-local, portmap, tuning, bandwidth,
// firewall, loopback …).
const debianCNIDir = "/usr/lib/cni"

var (
	cniInstallMu sync.Mutex
	cniToolOnce  sync.Once
	cniToolErr   error
	cniSubnetN   atomic.Int32
)

// cniNextSubnet returns 10.206.N.0/24 and its .1 for a network of the
// test's own (reference bridge, Podman).
func cniNextSubnet() (subnet, gateway string) {
	n := cniSubnetN.Add(1)
	if n > 250 {
		panic("CNI tests ran out of test subnets")
	}
	return fmt.Sprintf("10.206.%d.0/24", n), fmt.Sprintf("10.206.%d.1", n)
}

// cniReferencePlugins returns the directory of Debian's reference CNI
// plugins, installing containernetworking-plugins with apt when it is
// missing (root only; skips, or fails under NETALIAS_REQUIRE_ROOT=1, when
// that is impossible).
func cniReferencePlugins(t testing.TB) string {
	t.Helper()
	testenv.RequireRoot(t)
	cniInstallMu.Lock()
	defer cniInstallMu.Unlock()
	if _, err := os.Stat(filepath.Join(debianCNIDir, "bridge")); err == nil {
		return debianCNIDir
	}
	testenv.RequireCommand(t, "apt-get")
	t.Logf("installing Debian's containernetworking-plugins into %s", debianCNIDir)
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", "install", "-y", "-qq", "containernetworking-plugins")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	out, err := install()
	if err != nil {
		// The package lists may be stale on a fresh machine.
		if upd, uerr := exec.Command("apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
			out = append(out, upd...)
		} else {
			out, err = install()
		}
	}
	if _, serr := os.Stat(filepath.Join(debianCNIDir, "bridge")); err != nil || serr != nil {
		msg := fmt.Sprintf("Debian's containernetworking-plugins is not installed and apt-get could not install it (%v, %v):\n%s", err, serr, out)
		if os.Getenv("NETALIAS_REQUIRE_ROOT") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return debianCNIDir
}

// cnitoolPath builds cnitool v1.3.0 (the CNI project's command-line
// runtime) into the test binary directory, once per run.
func cnitoolPath(t testing.TB) string {
	t.Helper()
	out := filepath.Join(binDir, "cnitool")
	cniToolOnce.Do(func() {
		cmd := exec.Command("go", "install", "github.com/containernetworking/cni/cnitool@v1.3.0")
		cmd.Env = append(os.Environ(), "GOBIN="+binDir, "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			cniToolErr = fmt.Errorf("go install cnitool@v1.3.0: %v\n%s", err, b)
		}
	})
	if cniToolErr != nil {
		t.Fatal(cniToolErr)
	}
	return out
}

// cniPluginDir returns a fresh directory holding the netalias binary under
// the plugin's type name, for CNI_PATH.
func cniPluginDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Symlink(binary(t, "netalias"), filepath.Join(d, "netalias")); err != nil {
		t.Fatal(err)
	}
	return d
}

// requireCNIPluginMode fails t unless the netalias binary answers
// CNI_COMMAND=VERSION as a CNI plugin speaking 1.1.0.
func requireCNIPluginMode(t testing.TB, pluginDir string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(pluginDir, "netalias"))
	cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
	out, _ := cmd.Output()
	var v struct {
		Supported []string `json:"supportedVersions"`
	}
	if json.Unmarshal(out, &v) != nil || !slices.Contains(v.Supported, "1.1.0") {
		t.Fatalf("the netalias binary does not answer CNI_COMMAND=VERSION with 1.1.0: %q", out)
	}
}

// cniConfDir is a NETCONFPATH directory holding conflists.
type cniConfDir struct {
	dir     string
	cniPath string // CNI_PATH: the netalias dir, then the reference plugins
}

func newCNIConfDir(t testing.TB, cniPath ...string) cniConfDir {
	return cniConfDir{dir: t.TempDir(), cniPath: strings.Join(cniPath, ":")}
}

// netalias writes NAME.conflist for a netalias network of stateDir, with
// the reference plugins in chain after it.
func (c cniConfDir) netalias(t testing.TB, name, stateDir, network, cniVersion string, chain ...string) {
	t.Helper()
	b, err := cni.Conflist(cni.ConflistOptions{Network: network, Name: name, StateDir: stateDir, CNIVersion: cniVersion, Plugins: chain})
	if err != nil {
		t.Fatal(err)
	}
	c.write(t, name, b)
}

// bridge writes NAME.conflist for Debian's bridge + host-local on a
// bridge of its own (with ipMasq: with Docker on the host, FORWARD drops
// what the bridge plugin does not accept itself).
func (c cniConfDir) bridge(t testing.TB, name, brName, subnet, cniVersion string) {
	t.Helper()
	conf := map[string]any{
		"cniVersion": cniVersion, "name": name,
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": brName, "isGateway": true, "ipMasq": true,
			"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": subnet}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}}, "dataDir": filepath.Join(c.dir, "ipam")},
		}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	c.write(t, name, b)
	t.Cleanup(func() { exec.Command("ip", "link", "del", brName).Run() })
}

func (c cniConfDir) write(t testing.TB, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(c.dir, name+".conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// cnitoolRun is one cnitool call.
type cnitoolRun struct {
	IfName  string // CNI_IFNAME, default eth0
	Args    string // CNI_ARGS
	CapArgs string // CAP_ARGS (JSON)
}

// cnitool runs `cnitool CMD NAME NETNS` against the conflists of c. It
// runs in a private mount namespace with cacheDir bind-mounted over
// /var/lib/cni, cnitool's fixed cache, so runs leave nothing in the
// host's. It returns stdout, stderr and the error.
func (c cniConfDir) cnitool(t testing.TB, cacheDir, cmd, name, netnsPath string, r cnitoolRun) (string, string, error) {
	t.Helper()
	testenv.RequireCommand(t, "unshare")
	if r.IfName == "" {
		r.IfName = "eth0"
	}
	if _, err := os.Stat("/var/lib/cni"); err != nil {
		// The bind mount needs a mount point: one this test made goes.
		t.Cleanup(func() { os.Remove("/var/lib/cni") })
	}
	script := `mkdir -p /var/lib/cni && mount --bind "$CNI_TEST_CACHE" /var/lib/cni && exec "$@"`
	x := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", cnitoolPath(t), cmd, name, netnsPath)
	x.Env = append(os.Environ(), "CNI_TEST_CACHE="+cacheDir, "NETCONFPATH="+c.dir, "CNI_PATH="+c.cniPath, "CNI_IFNAME="+r.IfName)
	if r.Args != "" {
		x.Env = append(x.Env, "CNI_ARGS="+r.Args)
	}
	if r.CapArgs != "" {
		x.Env = append(x.Env, "CAP_ARGS="+r.CapArgs)
	}
	var o, e bytes.Buffer
	x.Stdout, x.Stderr = &o, &e
	err := x.Run()
	return o.String(), e.String(), err
}

// podmanCNIConf is containers.conf for Podman 4.3 on its CNI backend with
// private network configs and plugin directories; the machine's netavark
// setup (podmanConf, used by the other Podman tests) stays untouched.
// events_logger "none" keeps these containers out of the journal that
// other tests' Podman services follow.
const podmanCNIConf = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
events_logger = "none"
[network]
network_backend = "cni"
cni_plugin_dirs = [%s]
network_config_dir = %q
`

// podmanCNI is the Podman CLI on its CNI backend with a root, run root and
// tmp dir of its own (vfs storage: nothing to unmount afterwards).
type podmanCNI struct {
	t                        testing.TB
	conf, root, runroot, tmp string
	netDir                   string // network_config_dir: write conflists here
	pluginDirs               []string
}

// newPodmanCNI prepares the private Podman; the plugin directories are
// searched in order (the netalias dir first, then debianCNIDir).
func newPodmanCNI(t testing.TB, pluginDirs ...string) *podmanCNI {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "podman")
	testenv.RequireCommand(t, "runc")
	// Podman refuses a run root longer than 50 characters: t.TempDir()'s
	// are longer.
	d, err := os.MkdirTemp("", "nacni-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	p := &podmanCNI{t: t, conf: filepath.Join(d, "containers.conf"), root: filepath.Join(d, "root"),
		runroot: filepath.Join(d, "runroot"), tmp: filepath.Join(d, "tmp"), netDir: filepath.Join(d, "net.d"), pluginDirs: pluginDirs}
	for _, dir := range []string{p.root, p.runroot, p.tmp, p.netDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var quoted []string
	for _, pd := range pluginDirs {
		quoted = append(quoted, fmt.Sprintf("%q", pd))
	}
	if err := os.WriteFile(p.conf, []byte(fmt.Sprintf(podmanCNIConf, strings.Join(quoted, ", "), p.netDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	// Podman's libcni caches results under /var/lib/cni (no setting moves
	// it); DEL empties it, and a directory only this test made goes too.
	_, statErr := os.Stat("/var/lib/cni")
	cniCacheWasThere := statErr == nil
	t.Cleanup(func() {
		if !cniCacheWasThere {
			os.Remove("/var/lib/cni/results")
			os.Remove("/var/lib/cni")
		}
	})
	t.Cleanup(func() {
		// Containers first (their DEL runs through our plugin), then the
		// storage; vfs leaves no mounts, but the run root may hold shm.
		if out, err := p.cmd("rm", "-af", "-t", "0").CombinedOutput(); err != nil {
			t.Logf("podman rm -af: %v\n%s", err, out)
		}
		exec.Command("umount", "-R", p.runroot).Run()
	})
	return p
}

func (p *podmanCNI) cmd(args ...string) *exec.Cmd {
	global := []string{"--root", p.root, "--runroot", p.runroot, "--tmpdir", p.tmp, "--storage-driver", "vfs"}
	c := exec.Command("podman", append(global, args...)...)
	c.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	return c
}

func (p *podmanCNI) must(args ...string) string {
	p.t.Helper()
	var stderr bytes.Buffer
	c := p.cmd(args...)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		p.t.Fatalf("podman %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// busybox imports the busybox rootfs (see busyboxImage) into the private
// storage and returns its reference.
func (p *podmanCNI) busybox() string {
	p.t.Helper()
	requireBusybox(p.t)
	tarball := filepath.Join(p.t.TempDir(), "rootfs.tar")
	if err := writeBusyboxRootfs(tarball); err != nil {
		p.t.Fatalf("busybox rootfs: %v", err)
	}
	ref := "localhost/natest-bb-cni:latest"
	p.must("import", "--change", `CMD ["sh"]`, tarball, ref)
	return ref
}

// TestCNIHarnessPodmanReference checks the harness itself with Debian's
// reference plugins: Podman on its CNI backend, in its private root, runs
// a container on a bridge + host-local conflist from our conf dir and the
// container gets an address of the conflist's subnet. (The same setup
// with a netalias conflist is TestCNIPodmanNames below.)
func TestCNIHarnessPodmanReference(t *testing.T) {
	ref := cniReferencePlugins(t)
	p := newPodmanCNI(t, ref)
	subnet, gw := cniNextSubnet()
	name := natestName("natest-cniref")
	confs := cniConfDir{dir: p.netDir}
	confs.bridge(t, name, "nab-"+agRand(), subnet, "1.0.0")
	img := p.busybox()
	out := p.must("run", "--rm", "--network", name, img, "ip", "-4", "-o", "addr", "show", "eth0")
	prefix := strings.TrimSuffix(gw, "1")
	if !strings.Contains(out, "inet "+prefix) {
		t.Errorf("container address %q is not in %s", out, subnet)
	}
}

// TestCNIToolLifecycle: cnitool add, check,
// del, del on a netalias network; the Result names the veth and the
// address the state records, DEL leaves no veth and no record.
func TestCNIToolLifecycle(t *testing.T) {
	e := newAgentEnv(t)
	dir := cniPluginDir(t)
	requireCNIPluginMode(t, dir)
	net := "cni" + agRand()
	e.network(net)
	confs := newCNIConfDir(t, dir)
	confs.netalias(t, net, e.dir, net, "1.1.0")
	ns := "/run/netns/" + agNetns(t)
	cache := t.TempDir()
	out, stderr, err := confs.cnitool(t, cache, "add", net, ns, cnitoolRun{Args: "IgnoreUnknown=1;K8S_POD_NAME=web", CapArgs: `{"aliases":["db"]}`})
	if err != nil {
		t.Fatalf("cnitool add: %v\n%s%s", err, out, stderr)
	}
	var res struct {
		Interfaces []struct{ Name, Sandbox string } `json:"interfaces"`
		IPs        []struct{ Address string }       `json:"ips"`
		DNS        struct{ Nameservers, Search []string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("cnitool add printed %q: %v", out, err)
	}
	ep := e.endpoint(net, "web")
	if len(res.Interfaces) != 2 || res.Interfaces[0].Name != ep.HostVeth || res.Interfaces[1].Sandbox != ns ||
		len(res.IPs) == 0 || !strings.HasPrefix(res.IPs[0].Address, ep.IPv4.String()+"/") {
		t.Errorf("Result %s does not match the state's endpoint %+v", out, ep)
	}
	if !slices.Equal(ep.Aliases, []string{"db"}) || !slices.Equal(res.DNS.Search, []string{net}) {
		t.Errorf("aliases %v, dns search %v", ep.Aliases, res.DNS.Search)
	}
	if _, stderr, err := confs.cnitool(t, cache, "check", net, ns, cnitoolRun{}); err != nil {
		t.Errorf("cnitool check after add: %v\n%s", err, stderr)
	}
	for i := range 2 {
		if _, stderr, err := confs.cnitool(t, cache, "del", net, ns, cnitoolRun{}); err != nil {
			t.Fatalf("cnitool del #%d: %v\n%s", i+1, err, stderr)
		}
	}
	if n := len(e.file(net).Endpoints); n != 0 {
		t.Errorf("%d endpoints left after del", n)
	}
	agEventually(t, 5*time.Second, "host veth "+ep.HostVeth+" gone", func() bool { return !agHasLink(t, ep.HostVeth) })
}

// TestCNIPodmanNames: two busybox containers
// of Podman on its CNI backend, on a netalias conflist, resolve each
// other by name.network and by alias through our CoreDNS at the gateway
// (the Result's dns, written into their resolv.conf by Podman).
func TestCNIPodmanNames(t *testing.T) {
	e := newAgentEnv(t)
	dir := cniPluginDir(t)
	requireCNIPluginMode(t, dir)
	p := newPodmanCNI(t, dir, cniReferencePlugins(t))
	net := "cni" + agRand()
	e.network(net)
	f := e.file(net)
	dnCoreDNS(t, dnCorefile(t, e.dir, dnsAddr, f.Network.Gateway.String()))
	confs := cniConfDir{dir: p.netDir}
	confs.netalias(t, net, e.dir, net, "1.0.0")
	img := p.busybox()
	p.must("run", "-d", "--name", "web1", "--network", net, "--network-alias", "api", img, "sleep", "300")
	for _, q := range []string{"web1." + net, "api." + net} {
		out := p.must("run", "--rm", "--network", net, img, "nslookup", q)
		if !strings.Contains(out, e.endpoint(net, "web1").IPv4.String()) {
			t.Errorf("nslookup %s from a second container: %s", q, out)
		}
	}
}

var (
	cniFakeOnce sync.Once
	cniFakeErr  error
)

// cniFakePluginDir returns a CNI_PATH directory whose "netalias" is the
// cni package's test binary: run under that name it is the real plugin
// (cni.Main) over the package's fake backend, which keeps its networks
// and records every call in STATEDIR/fake.json (see cni/fake_test.go).
// It lets a real runtime drive the protocol layer before the agent's
// backend exists.
func cniFakePluginDir(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(binDir, "cni-fake.test")
	cniFakeOnce.Do(func() {
		cmd := exec.Command("go", "test", "-c", "-o", bin, "./cni")
		cmd.Dir = ".."
		if b, err := cmd.CombinedOutput(); err != nil {
			cniFakeErr = fmt.Errorf("go test -c ./cni: %v\n%s", err, b)
		}
	})
	if cniFakeErr != nil {
		t.Fatal(cniFakeErr)
	}
	d := t.TempDir()
	if err := os.Symlink(bin, filepath.Join(d, "netalias")); err != nil {
		t.Fatal(err)
	}
	return d
}

// cniFakeCall is one call the fake backend recorded (the subset of
// cni/fake_test.go's fakeCall read here).
type cniFakeCall struct {
	Op  string `json:"op"`
	Add *struct {
		CNINetwork, ContainerID, IfName, Netns, Name, IPv4 string
		Aliases                                            []string
		MAC                                                []byte
	} `json:"add"`
	Key *struct{ ContainerID, IfName string } `json:"key"`
}

// TestCNIPodmanDrivesPlugin: Podman 4.3 on its CNI backend runs a
// container on a generated netalias conflist. The plugin is the real
// protocol layer over the fake backend, so this checks what Podman sends
// (K8S_POD_NAME, its aliases map keyed by the CNI network name, IP= and
// MAC= arguments, the netns) and that it takes our Result: the
// container's resolv.conf has the gateway as first nameserver and the
// network as search domain. DEL comes with the same key on removal.
func TestCNIPodmanDrivesPlugin(t *testing.T) {
	dir := cniFakePluginDir(t)
	p := newPodmanCNI(t, dir)
	stateDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(stateDir, "fake.json"), []byte(`{"networks":{"testnet":{"subnet":"10.88.7.0/24","mtu":1400}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	confs := cniConfDir{dir: p.netDir}
	confs.netalias(t, "pod_net.1", stateDir, "testnet", "")
	img := p.busybox()
	out := p.must("run", "--rm", "--name", "web1", "--network", "pod_net.1", "--network-alias", "api",
		"--ip", "10.88.7.33", "--mac-address", "02:aa:bb:cc:dd:ee", img, "cat", "/etc/resolv.conf")
	var ns []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "nameserver" {
			ns = append(ns, f[1])
		}
	}
	if !strings.Contains(out, "search testnet") || len(ns) == 0 || ns[0] != "10.88.7.1" {
		t.Errorf("container resolv.conf does not use the Result's dns (nameserver 10.88.7.1 first, search testnet):\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(stateDir, "fake.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Calls []cniFakeCall }
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Calls) != 2 || st.Calls[0].Op != "ADD" || st.Calls[1].Op != "DEL" {
		t.Fatalf("backend calls %s, want ADD then DEL", b)
	}
	add, del := st.Calls[0].Add, st.Calls[1].Key
	if add.Name != "web1" || add.CNINetwork != "pod_net.1" || add.IfName != "eth0" || add.IPv4 != "10.88.7.33" ||
		!slices.Contains(add.Aliases, "api") || !strings.HasPrefix(add.Netns, "/run/netns/") {
		t.Errorf("ADD from Podman: %+v", add)
	}
	if mac := fmt.Sprintf("%x", add.MAC); mac != "02aabbccddee" {
		t.Errorf("MAC from Podman: %s, want 02aabbccddee", mac)
	}
	if del.ContainerID != add.ContainerID || del.IfName != "eth0" {
		t.Errorf("DEL key %+v, ADD key %s/%s", del, add.ContainerID, add.IfName)
	}
}

// TestCNIToolDrivesPlugin: cnitool v1.3.0 (the CNI project's own runtime)
// drives the protocol layer over the fake backend through add, check,
// del, status and gc, with its cache kept private; it also checks the
// cnitool harness that TestCNIToolLifecycle uses.
func TestCNIToolDrivesPlugin(t *testing.T) {
	testenv.RequireRoot(t) // the private mount namespace for cnitool's cache
	dir := cniFakePluginDir(t)
	stateDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(stateDir, "fake.json"), []byte(`{"networks":{"testnet":{"subnet":"10.88.9.0/24"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	confs := newCNIConfDir(t, dir)
	confs.netalias(t, "testnet", stateDir, "testnet", "1.1.0")
	netns := filepath.Join(t.TempDir(), "ns") // the fake backend only records it
	if err := os.WriteFile(netns, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	out, stderr, err := confs.cnitool(t, cache, "add", "testnet", netns, cnitoolRun{Args: "K8S_POD_NAME=web_1", CapArgs: `{"aliases":["db"]}`})
	if err != nil {
		t.Fatalf("cnitool add: %v\n%s%s", err, out, stderr)
	}
	var res struct {
		CNIVersion string `json:"cniVersion"`
		IPs        []struct{ Address string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.CNIVersion != "1.1.0" || len(res.IPs) != 1 || res.IPs[0].Address != "10.88.9.2/24" {
		t.Errorf("cnitool add printed %q (%v)", out, err)
	}
	if !strings.Contains(stderr, `netalias: warning: K8S_POD_NAME "web_1"`) {
		t.Errorf("no warning about the invalid name on stderr: %q", stderr)
	}
	for _, cmd := range []string{"check", "status", "del", "del", "gc"} {
		if out, stderr, err := confs.cnitool(t, cache, cmd, "testnet", netns, cnitoolRun{}); err != nil {
			t.Errorf("cnitool %s: %v\n%s%s", cmd, err, out, stderr)
		}
	}
	b, err := os.ReadFile(filepath.Join(stateDir, "fake.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Calls []cniFakeCall }
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, c := range st.Calls {
		ops = append(ops, c.Op)
	}
	// cnitool's gc passes no valid list: libcni DELs nothing left in its
	// cache, then the plugin's GC runs.
	if want := "ADD CHECK STATUS DEL DEL GC"; strings.Join(ops, " ") != want {
		t.Errorf("backend calls %v, want %s", ops, want)
	}
	if entries, _ := os.ReadDir(filepath.Join(cache, "results")); len(entries) != 0 {
		t.Errorf("cnitool's cache keeps %d results after del", len(entries))
	}
}
