package test

// Harness for the Docker network driver's tests against a real dockerd
// (issue 11): a private dockerd beside the machine's own, the offline
// busybox image imported into it, and the plugin process.
//
// TestDockerDriverPrivateDaemon checks the harness itself;
// TestDockerDriverProtocol drives the protocol layer with a minimal
// backend; docker_driver_test.go runs issue 11's scenario through
// `netalias docker-plugin`. Run them under the kernel lock:
//
//	flock /tmp/netalias-kernel.lock go test ./test -run DockerDriver -v
//
// Subnets: 10.207.0.0/16 for the private daemon's own bridge and its
// Docker-driver networks, 10.208.0.0/16 for netalias-driver networks.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netalias/netalias/dockerdriver"
	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/state"
)

// privateDockerd is a dockerd of the test's own. The machine's dockerd is
// shared by every test and must never be stopped or reconfigured, so tests
// that restart Docker, or need a daemon no other test disturbs, use one of
// these: its own data root (vfs), exec root (with its own supervised
// containerd), socket, pid file and default bridge, no iptables. Plugins
// in /run/docker/plugins are visible to it as to the machine's.
type privateDockerd struct {
	t      testing.TB
	dir    string // PRIV: everything the daemon writes lives under it
	sock   string
	pid    string
	bridge string // its default bridge, made by the test
	third  int    // 10.207.third.0/24 is the bridge's subnet
	ns     string // containerd namespace
	log    *os.File
	cmd    *exec.Cmd
	exited chan error
	engine engine // the docker CLI pointed at this daemon
	done   bool   // cleanup ran
}

// startPrivateDockerd starts a private dockerd and registers its complete
// removal at cleanup.
func startPrivateDockerd(t testing.TB) *privateDockerd {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "dockerd")
	testenv.RequireCommand(t, "docker")
	testenv.RequireCommand(t, "ip")
	// A short path: containerd's sockets live under the exec root, and a
	// unix socket path is limited to 107 bytes.
	dir, err := os.MkdirTemp("", "natest-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	d := &privateDockerd{
		t:      t,
		dir:    dir,
		sock:   filepath.Join(dir, "d.sock"),
		pid:    filepath.Join(dir, "d.pid"),
		bridge: natestName("natdb"), // 14 characters: fits IFNAMSIZ
		third:  1 + rand.IntN(120),
		ns:     natestName("natest"),
	}
	d.engine = engine{bin: "docker", env: []string{"DOCKER_HOST=unix://" + d.sock}}
	t.Cleanup(d.cleanup)

	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Its own bridge: --bridge=none would make dockerd delete the host's
	// docker0, breaking the machine's daemon.
	for _, args := range [][]string{
		{"link", "add", d.bridge, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("10.207.%d.1/24", d.third), "dev", d.bridge},
		{"link", "set", d.bridge, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if d.log, err = os.Create(filepath.Join(dir, "dockerd.log")); err != nil {
		t.Fatal(err)
	}
	d.start()
	return d
}

// start launches dockerd and waits until it answers.
func (d *privateDockerd) start() {
	t := d.t
	t.Helper()
	d.cmd = exec.Command("dockerd",
		"--config-file", filepath.Join(d.dir, "daemon.json"),
		"--data-root", filepath.Join(d.dir, "root"),
		"--exec-root", filepath.Join(d.dir, "exec"),
		"-H", "unix://"+d.sock,
		"--pidfile", d.pid,
		"--bridge", d.bridge,
		"--iptables=false", "--ip6tables=false",
		"--storage-driver", "vfs",
		// Should a system containerd appear, keep out of the machine's
		// namespaces in it.
		"--containerd-namespace", d.ns,
		"--containerd-plugins-namespace", d.ns+"-plugins",
	)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("dockerd: %v", err)
	}
	d.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(d.cmd, d.exited)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}")
		c.Env = append(os.Environ(), d.engine.env...)
		err := c.Run()
		cancel()
		if err == nil {
			return
		}
		select {
		case werr := <-d.exited:
			d.exited <- werr
			t.Fatalf("private dockerd exited: %v\n%s", werr, d.logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("private dockerd did not answer within 60s\n%s", d.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop ends dockerd (SIGTERM; SIGKILL after 60 s) and waits until its pid
// file is gone: a daemon started before that refuses to run.
func (d *privateDockerd) stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		d.t.Logf("private dockerd ignored SIGTERM for 60s; killing it")
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
	// A killed daemon leaves its pid file and its supervised containerd.
	os.Remove(d.pid)
	d.killContainerd()
}

// restart stops and starts dockerd, as a host's reboot or upgrade does.
func (d *privateDockerd) restart() {
	d.t.Helper()
	d.stop()
	d.start()
}

// killContainerd ends a supervised containerd a killed dockerd left.
func (d *privateDockerd) killContainerd() {
	b, err := os.ReadFile(filepath.Join(d.dir, "exec", "containerd", "containerd.pid"))
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 1 {
		return
	}
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmdline), d.dir) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (d *privateDockerd) logTail() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "dockerd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// cleanup removes everything: containers and networks through the daemon,
// the daemon, mounts left under PRIV, the bridge, PRIV.
func (d *privateDockerd) cleanup() {
	t := d.t
	if d.done {
		return
	}
	d.done = true
	if d.cmd != nil {
		if ids := strings.Fields(d.quiet("ps", "-aq")); len(ids) > 0 {
			d.quiet(append([]string{"rm", "-f"}, ids...)...)
		}
		if ids := strings.Fields(d.quiet("network", "ls", "-q", "--filter", "type=custom")); len(ids) > 0 {
			d.quiet(append([]string{"network", "rm"}, ids...)...)
		}
		d.stop()
	}
	if d.log != nil {
		if t.Failed() {
			t.Logf("private dockerd log (tail):\n%s", d.logTail())
		}
		d.log.Close()
	}
	for _, m := range mountsUnder(d.dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
	if err := exec.Command("ip", "link", "show", d.bridge).Run(); err == nil {
		if out, err := exec.Command("ip", "link", "del", d.bridge).CombinedOutput(); err != nil {
			t.Errorf("ip link del %s: %v\n%s", d.bridge, err, out)
		}
	}
	if err := os.RemoveAll(d.dir); err != nil {
		t.Errorf("removing %s: %v", d.dir, err)
	}
}

// quiet runs the CLI against the daemon, ignoring failure (cleanup).
func (d *privateDockerd) quiet(args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "docker", args...)
	c.Env = append(os.Environ(), d.engine.env...)
	out, err := c.Output()
	if err != nil {
		d.t.Logf("docker %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// removeNetwork removes a network at cleanup unless the test already did.
func (d *privateDockerd) removeNetwork(name string) {
	if d.cmd == nil || d.engine.cmd("network", "inspect", name).Run() != nil {
		return
	}
	d.quiet("network", "rm", name)
}

// mountsUnder lists mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		// Field 5 is the mount point, octal-escaped.
		mp := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			ms = append(ms, mp)
		}
	}
	slices.SortFunc(ms, func(a, b string) int { return len(b) - len(a) })
	return ms
}

// importBusybox imports the offline busybox image into the private daemon
// (removed with its data root) and returns its reference.
func (d *privateDockerd) importBusybox() string {
	t := d.t
	t.Helper()
	requireBusybox(t)
	tarball := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := writeBusyboxRootfs(tarball); err != nil {
		t.Fatalf("busybox rootfs: %v", err)
	}
	ref := "localhost/" + natestName("natest-bb") + ":latest"
	d.engine.must(t, "import", "--change", `CMD ["sh"]`, tarball, ref)
	return ref
}

// running reports whether a container of the private daemon runs.
func (d *privateDockerd) running(ctr string) bool {
	out, err := d.engine.cmd("inspect", "-f", "{{.State.Running}}", ctr).Output()
	return err == nil && strings.TrimSpace(string(out)) == "true"
}

// within polls cond every 50 ms and fails t after limit.
func within(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDockerDriverPrivateDaemon checks the harness: a private dockerd runs
// a container from the offline image on a network of its own, brings a
// --restart always container back on its address after a daemon restart,
// and cleanup leaves nothing (checked by the next run's start, and here
// by the bridge and directory being gone).
func TestDockerDriverPrivateDaemon(t *testing.T) {
	d := startPrivateDockerd(t)
	img := d.importBusybox()
	netName := natestName("natest")
	d.engine.must(t, "network", "create", "--subnet", fmt.Sprintf("10.207.%d.0/24", 125+d.third), netName)
	d.engine.run(t, "c1-"+netName, "--restart", "always", "--stop-timeout", "1", "--network", netName, img, "sleep", "3600")
	ip := d.engine.ip(t, "c1-"+netName, netName)
	d.restart()
	within(t, 30*time.Second, "the --restart always container runs again", func() bool { return d.running("c1-" + netName) })
	if again := d.engine.ip(t, "c1-"+netName, netName); again != ip {
		t.Errorf("address after the daemon restart %s, want %s", again, ip)
	}
	// Cleanup now (it is idempotent), to check it.
	d.engine.must(t, "rm", "-f", "c1-"+netName)
	d.cleanup()
	if _, err := os.Stat(d.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind", d.dir)
	}
	if exec.Command("ip", "link", "show", d.bridge).Run() == nil {
		t.Errorf("bridge %s left behind", d.bridge)
	}
	if ms := mountsUnder(d.dir); len(ms) > 0 {
		t.Errorf("mounts left behind: %v", ms)
	}
}

// driverPlugin is `netalias docker-plugin` running for one test, under a
// plugin name of its own so no other test or daemon meets it.
type driverPlugin struct {
	t        testing.TB
	bin      string
	name     string
	stateDir string
	sock     string
	cmd      *exec.Cmd
	exited   chan error
	extra    []string // more docker-plugin flags
}

// requireDockerPlugin returns the netalias binary, which must have the
// docker-plugin command.
func requireDockerPlugin(t testing.TB) string {
	t.Helper()
	testenv.RequireRoot(t)
	bin := binary(t, "netalias")
	// cobra answers --help of an unknown command with the root's help and
	// status 0: look for the command's own usage line.
	out, err := exec.Command(bin, "docker-plugin", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "netalias docker-plugin") {
		t.Fatalf("netalias has no docker-plugin command: %v\n%s", err, out)
	}
	return bin
}

// startDriverPlugin starts the plugin on stateDir and waits for its socket.
func startDriverPlugin(t testing.TB, bin, name, stateDir string, extra ...string) *driverPlugin {
	t.Helper()
	p := &driverPlugin{t: t, bin: bin, name: name, stateDir: stateDir,
		sock: filepath.Join("/run/docker/plugins", name+".sock"), extra: extra}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *driverPlugin) start() {
	t := p.t
	t.Helper()
	p.cmd = exec.Command(p.bin, append([]string{"--state-dir", p.stateDir, "docker-plugin", "--name", p.name}, p.extra...)...)
	log, err := os.OpenFile(filepath.Join(p.stateDir, "plugin-"+p.name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("netalias docker-plugin: %v", err)
	}
	log.Close()
	p.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(p.cmd, p.exited)
	within(t, 10*time.Second, "plugin socket "+p.sock, func() bool {
		_, err := os.Stat(p.sock)
		return err == nil
	})
}

// stop ends the plugin (SIGTERM) and checks it removed its socket, so
// dockerd finds no plugin rather than a dead one.
func (p *driverPlugin) stop() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.t.Errorf("plugin %s ignored SIGTERM for 15s", p.name)
		p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
	if _, err := os.Stat(p.sock); !errors.Is(err, os.ErrNotExist) {
		p.t.Errorf("plugin %s left its socket %s", p.name, p.sock)
		os.Remove(p.sock)
	}
}

// netaliasNetwork returns the netalias network file as `network inspect`
// prints it, and whether the network exists.
func (p *driverPlugin) netaliasNetwork(name string) (state.File, bool) {
	p.t.Helper()
	out, err := exec.Command(p.bin, "--state-dir", p.stateDir, "network", "inspect", "--format", "json", name).Output()
	if err != nil {
		return state.File{}, false
	}
	var files []state.File
	if err := json.Unmarshal(out, &files); err != nil || len(files) != 1 {
		p.t.Fatalf("netalias network inspect %s: %v\n%s", name, err, out)
	}
	return files[0], true
}

// bridgePorts lists the interfaces enslaved to bridge.
func bridgePorts(t testing.TB, bridge string) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show", "master", bridge).Output()
	if err != nil {
		t.Fatalf("ip link show master %s: %v", bridge, err)
	}
	var ports []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			ports = append(ports, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return ports
}

// ipBackend is the least dockerdriver.Backend that plumbs for real (a
// bridge, veth pairs, an in-memory allocator; no firewall, no state
// files), so that the protocol is checked against a real dockerd before
// the agent implements the Backend. It replaces nothing the users meet.
type ipBackend struct {
	t    *testing.T
	mu   sync.Mutex
	nets map[string]*ipNet
}

type ipNet struct {
	info   dockerdriver.NetworkInfo
	bridge string
	used   map[netip.Addr]bool
	eps    map[string]string // endpoint ID → host veth
}

func (b *ipBackend) ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (b *ipBackend) Network(name string) (dockerdriver.NetworkInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n, ok := b.nets[name]; ok {
		return n.info, nil
	}
	return dockerdriver.NetworkInfo{}, fmt.Errorf("network %q: %w", name, dockerdriver.ErrNotFound)
}

func (b *ipBackend) ChooseSubnet(v6 bool, avoid []netip.Prefix) (netip.Prefix, error) {
	for range 100 {
		x := 1 + rand.IntN(250)
		p := netip.MustParsePrefix(fmt.Sprintf("10.208.%d.0/24", x))
		if v6 {
			p = netip.MustParsePrefix(fmt.Sprintf("fd00:10:208:%x::/64", x))
		}
		if !slices.ContainsFunc(avoid, p.Overlaps) {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("no free subnet")
}

func (b *ipBackend) CreateNetwork(spec dockerdriver.NetworkSpec) (dockerdriver.NetworkInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	br := natestName("natbr")
	if err := b.ip("link", "add", br, "type", "bridge"); err != nil {
		return dockerdriver.NetworkInfo{}, err
	}
	b.t.Cleanup(func() { exec.Command("ip", "link", "del", br).Run() })
	if err := b.ip("addr", "add", netip.PrefixFrom(spec.Gateway, spec.Subnet.Bits()).String(), "dev", br); err != nil {
		return dockerdriver.NetworkInfo{}, err
	}
	if spec.Subnet6.IsValid() {
		if err := b.ip("addr", "add", netip.PrefixFrom(spec.Gateway6, spec.Subnet6.Bits()).String(), "dev", br, "nodad"); err != nil {
			return dockerdriver.NetworkInfo{}, err
		}
	}
	if err := b.ip("link", "set", br, "up"); err != nil {
		return dockerdriver.NetworkInfo{}, err
	}
	info := dockerdriver.NetworkInfo{Name: spec.Name, Subnet: spec.Subnet, Gateway: spec.Gateway,
		Subnet6: spec.Subnet6, Gateway6: spec.Gateway6, Internal: spec.Internal}
	n := &ipNet{info: info, bridge: br, used: map[netip.Addr]bool{spec.Gateway: true}, eps: map[string]string{}}
	if spec.Gateway6.IsValid() {
		n.used[spec.Gateway6] = true
	}
	b.nets[spec.Name] = n
	return info, nil
}

func (b *ipBackend) RemoveNetwork(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nets[name]
	if !ok {
		return dockerdriver.ErrNotFound
	}
	delete(b.nets, name)
	return b.ip("link", "del", n.bridge)
}

func (b *ipBackend) AllocAddress(network string, v6 bool, want netip.Addr) (netip.Addr, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nets[network]
	if !ok || (v6 && !n.info.Subnet6.IsValid()) {
		return netip.Addr{}, fmt.Errorf("network %q: no such network or family", network)
	}
	sub := n.info.Subnet
	if v6 {
		sub = n.info.Subnet6
	}
	if want.IsValid() {
		if n.used[want] {
			return netip.Addr{}, fmt.Errorf("%s is taken", want)
		}
		n.used[want] = true
		return want, nil
	}
	for a := sub.Addr().Next(); sub.Contains(a); a = a.Next() {
		if !n.used[a] {
			n.used[a] = true
			return a, nil
		}
	}
	return netip.Addr{}, errors.New("full")
}

func (b *ipBackend) ReleaseAddress(network string, addr netip.Addr) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n, ok := b.nets[network]; ok {
		delete(n.used, addr)
	}
	return nil
}

func (b *ipBackend) CreateEndpoint(spec dockerdriver.EndpointSpec) (dockerdriver.EndpointInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nets[spec.Network]
	if !ok {
		return dockerdriver.EndpointInfo{}, dockerdriver.ErrNotFound
	}
	host, peer := "nav"+spec.EndpointID[:12], "nap"+spec.EndpointID[:12]
	a4 := spec.IPv4.As4()
	mac := net.HardwareAddr{0x02, 0x42, a4[0], a4[1], a4[2], a4[3]}
	if spec.MAC != nil {
		mac = spec.MAC
	}
	if err := b.ip("link", "add", host, "type", "veth", "peer", "name", peer, "address", mac.String()); err != nil {
		return dockerdriver.EndpointInfo{}, err
	}
	b.t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	if err := b.ip("link", "set", host, "master", n.bridge, "up"); err != nil {
		exec.Command("ip", "link", "del", host).Run()
		return dockerdriver.EndpointInfo{}, err
	}
	n.eps[spec.EndpointID] = host
	return dockerdriver.EndpointInfo{HostVeth: host, MAC: mac}, nil
}

func (b *ipBackend) DeleteEndpoint(network, endpointID string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.nets[network]
	if !ok || n.eps[endpointID] == "" {
		return dockerdriver.ErrNotFound
	}
	host := n.eps[endpointID]
	delete(n.eps, endpointID)
	return b.ip("link", "del", host)
}

func (b *ipBackend) Join(network, endpointID, sandboxKey string) (string, error) {
	return "nap" + endpointID[:12], nil
}

func (b *ipBackend) Leave(network, endpointID string) error { return nil }

// serveDriver serves dockerdriver on /run/docker/plugins/NAME.sock until
// the returned function is called.
func serveDriver(t *testing.T, name, stateDir string, be dockerdriver.Backend) (stop func()) {
	t.Helper()
	srv, err := dockerdriver.New(dockerdriver.Config{Name: name, StateDir: stateDir, Backend: be,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
}

// tWriter sends log lines to the test's log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestDockerDriverProtocol drives dockerdriver.Server from a real (private)
// dockerd 20.10 with ipBackend: network create with our IPAM, containers
// with our addresses and MACs on our bridge, Docker's embedded DNS, an
// internal network without docker_gwbridge, and removal.
func TestDockerDriverProtocol(t *testing.T) {
	d := startPrivateDockerd(t)
	img := d.importBusybox()
	be := &ipBackend{t: t, nets: map[string]*ipNet{}}
	name := natestName("natest-proto")
	stateDir := t.TempDir()
	stopPlugin := serveDriver(t, name, stateDir, be)
	t.Cleanup(func() { stopPlugin() })

	netName := natestName("natest")
	sub := netip.MustParsePrefix(fmt.Sprintf("10.208.%d.0/24", 1+rand.IntN(250)))
	d.engine.must(t, "network", "create", "-d", name, "--ipam-driver", name, "--subnet", sub.String(), "-o", "netalias.network="+netName, netName)
	t.Cleanup(func() { d.removeNetwork(netName) })
	info, err := be.Network(netName)
	if err != nil || info.Subnet != sub || info.Gateway != sub.Addr().Next() {
		t.Fatalf("backend network %+v (%v), want %s with gateway %s", info, err, sub, sub.Addr().Next())
	}

	c1, c2 := "c1-"+netName, "c2-"+netName
	d.engine.run(t, c1, "--stop-timeout", "1", "--network", netName, img, "sleep", "3600")
	d.engine.run(t, c2, "--stop-timeout", "1", "--network", netName, "--ip", sub.Addr().Next().Next().Next().Next().String(), img, "sleep", "3600")
	ip1, ip2 := d.engine.ip(t, c1, netName), d.engine.ip(t, c2, netName)
	if !sub.Contains(ip1) || ip2 != sub.Addr().Next().Next().Next().Next() || ip1 == ip2 {
		t.Errorf("addresses %s and %s, want ours in %s (c2's by --ip)", ip1, ip2, sub)
	}
	// Inside: eth0 with our address, our MAC, the default route via our
	// gateway.
	out := d.engine.must(t, "exec", c1, "ip", "-o", "addr", "show", "eth0")
	if !strings.Contains(out, ip1.String()+"/24") {
		t.Errorf("c1 eth0: %s", out)
	}
	a4 := ip1.As4()
	wantMAC := net.HardwareAddr{0x02, 0x42, a4[0], a4[1], a4[2], a4[3]}.String()
	if mac := d.engine.must(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+netName+`").MacAddress}}`, c1); mac != wantMAC {
		t.Errorf("c1 MAC %q, want the backend's %s", mac, wantMAC)
	}
	if out := d.engine.must(t, "exec", c1, "ip", "route"); !strings.Contains(out, "default via "+info.Gateway.String()) {
		t.Errorf("c1 routes:\n%s", out)
	}
	if gw := d.engine.must(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+netName+`").Gateway}}`, c1); gw != info.Gateway.String() {
		t.Errorf("Docker's gateway for c1 %q, want %s", gw, info.Gateway)
	}
	// Docker's embedded DNS answers the containers' names.
	if out := d.engine.must(t, "exec", c2, "nslookup", c1); !strings.Contains(out, ip1.String()) {
		t.Errorf("nslookup %s in %s:\n%s", c1, c2, out)
	}
	endpoints := func(network string) int {
		be.mu.Lock()
		defer be.mu.Unlock()
		return len(be.nets[network].eps)
	}
	if n := endpoints(netName); n != 2 {
		t.Errorf("%d endpoints in the backend, want 2", n)
	}

	// The plugin restarts: its map still knows the network.
	stopPlugin()
	stopPlugin = serveDriver(t, name, stateDir, be)
	c4 := "c4-" + netName
	d.engine.run(t, c4, "--stop-timeout", "1", "--restart", "always", "--network", netName, img, "sleep", "3600")
	if out := d.engine.must(t, "exec", c4, "nslookup", c2); !strings.Contains(out, ip2.String()) {
		t.Errorf("nslookup %s in %s after the plugin restart:\n%s", c2, c4, out)
	}

	// dockerd restarts with a --restart always container on the network:
	// no deadlock, the container comes back, no endpoint is left over.
	d.restart()
	within(t, 30*time.Second, c4+" running after the daemon restart", func() bool { return d.running(c4) })
	if ip := d.engine.ip(t, c4, netName); !sub.Contains(ip) {
		t.Errorf("%s came back on %s, outside %s", c4, ip, sub)
	}
	for _, c := range []string{c1, c2} {
		d.engine.must(t, "start", c)
	}
	if n := endpoints(netName); n != 3 {
		t.Errorf("%d endpoints in the backend after the daemon restart, want 3", n)
	}

	// An internal network: no default route, no docker_gwbridge.
	inner := natestName("natest")
	isub := netip.MustParsePrefix(fmt.Sprintf("10.208.%d.0/24", 1+rand.IntN(250)))
	d.engine.must(t, "network", "create", "-d", name, "--ipam-driver", name, "--internal", "--subnet", isub.String(), "-o", "netalias.network="+inner, inner)
	t.Cleanup(func() { d.removeNetwork(inner) })
	c3 := "c3-" + netName
	d.engine.run(t, c3, "--stop-timeout", "1", "--network", inner, img, "sleep", "3600")
	if out := d.engine.must(t, "exec", c3, "ip", "route"); strings.Contains(out, "default") {
		t.Errorf("a container on an internal network has a default route:\n%s", out)
	}
	if out := d.quiet("network", "ls", "-q", "--filter", "name=docker_gwbridge"); strings.TrimSpace(out) != "" {
		t.Errorf("Docker attached docker_gwbridge to an internal network's container")
	}

	// Dual stack, subnets chosen by the backend (no --subnet): Docker asks
	// our IPAM for both pools and both addresses.
	dual := natestName("natest")
	d.engine.must(t, "network", "create", "-d", name, "--ipam-driver", name, "--ipv6", "-o", "netalias.network="+dual, dual)
	t.Cleanup(func() { d.removeNetwork(dual) })
	dinfo, err := be.Network(dual)
	if err != nil || !dinfo.Subnet.IsValid() || !dinfo.Subnet6.IsValid() {
		t.Fatalf("dual-stack network in the backend: %+v %v", dinfo, err)
	}
	c5 := "c5-" + netName
	d.engine.run(t, c5, "--stop-timeout", "1", "--network", dual, img, "sleep", "3600")
	ip6 := d.engine.must(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+dual+`").GlobalIPv6Address}}`, c5)
	if a, err := netip.ParseAddr(ip6); err != nil || !dinfo.Subnet6.Contains(a) {
		t.Errorf("c5's IPv6 address %q, want one in %s", ip6, dinfo.Subnet6)
	}
	if out := d.engine.must(t, "exec", c5, "ip", "-6", "route"); !strings.Contains(out, "default via "+dinfo.Gateway6.String()) {
		t.Errorf("c5's IPv6 routes, want the default via %s:\n%s", dinfo.Gateway6, out)
	}
	d.engine.must(t, "rm", "-f", c5)
	d.engine.must(t, "network", "rm", dual)
	be.mu.Lock()
	_, dualLeft := be.nets[dual]
	be.mu.Unlock()
	if dualLeft {
		t.Errorf("dual-stack network left in the backend")
	}

	// Removal: endpoints, addresses, networks.
	d.engine.must(t, "rm", "-f", c1, c2, c3, c4)
	be.mu.Lock()
	left := len(be.nets[netName].eps) + len(be.nets[inner].eps)
	used := len(be.nets[netName].used)
	be.mu.Unlock()
	if left != 0 || used != 1 {
		t.Errorf("after docker rm: %d endpoints, %d addresses (want 0 and the gateway)", left, used)
	}
	d.engine.must(t, "network", "rm", netName, inner)
	for _, n := range []string{netName, inner} {
		if _, err := be.Network(n); !errors.Is(err, dockerdriver.ErrNotFound) {
			t.Errorf("network %s left in the backend after docker network rm", n)
		}
	}
	// Unknown options fail the create with our message, nothing made.
	out, err = func() (string, error) {
		b, err := d.engine.cmd("network", "create", "-d", name, "--ipam-driver", name, "--subnet", "10.208.254.0/24", "-o", "netalias.netwrok=x", natestName("natest")).CombinedOutput()
		return string(b), err
	}()
	if err == nil || !strings.Contains(out, "unknown option -o netalias.netwrok") {
		t.Errorf("typo in -o: %v\n%s", err, out)
	}
	// Docker's own IPAM would hand out addresses that collide with the
	// network's other members: refused, and nothing is left.
	foreign := natestName("natest")
	b, err := d.engine.cmd("network", "create", "-d", name, "--subnet", "10.208.253.0/24", foreign).CombinedOutput()
	if err == nil || !strings.Contains(string(b), "--ipam-driver "+name) {
		t.Errorf("network create without our IPAM driver: %v\n%s", err, b)
	}
	if out := d.quiet("network", "ls", "-q", "--filter", "name="+foreign); strings.TrimSpace(out) != "" {
		t.Errorf("a refused network create left network %s", foreign)
	}
	be.mu.Lock()
	if len(be.nets) != 0 {
		t.Errorf("networks left in the backend: %v", be.nets)
	}
	be.mu.Unlock()
}
