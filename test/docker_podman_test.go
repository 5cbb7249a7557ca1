package test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/netalias/netalias/internal/testenv"
)

// podmanConf makes Podman usable on these machines: crun refuses the hybrid
// cgroup layout (runc works), raising rlimits is not permitted, and a stray
// CNI config must not pull Podman onto the CNI backend.
const podmanConf = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
[network]
network_backend = "netavark"
`

// podmanService is a `podman system service` of the test's own, on a
// socket in a temporary directory; stop and start it for real.
type podmanService struct {
	t    testing.TB
	eng  engine
	sock string
	cmd  *exec.Cmd
	done chan struct{}
}

// podmanEngine is the Podman CLI with a configuration that works here
// (see podmanConf), written to a temporary file.
func podmanEngine(t testing.TB) engine {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "podman")
	testenv.RequireCommand(t, "runc")
	conf := filepath.Join(t.TempDir(), "containers.conf")
	if err := os.WriteFile(conf, []byte(podmanConf), 0o644); err != nil {
		t.Fatal(err)
	}
	return engine{bin: "podman", env: []string{"CONTAINERS_CONF=" + conf}, runArgs: []string{"--cap-add", "NET_RAW"}}
}

func newPodman(t testing.TB) *podmanService {
	t.Helper()
	p := &podmanService{
		t:    t,
		eng:  podmanEngine(t),
		sock: filepath.Join(t.TempDir(), "podman.sock"),
	}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *podmanService) endpoint() string { return "unix://" + p.sock }

func (p *podmanService) start() {
	p.t.Helper()
	p.cmd = p.eng.cmd("system", "service", "--time=0", p.endpoint())
	p.cmd.Stdout, p.cmd.Stderr = nil, nil
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("podman system service: %v", err)
	}
	p.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(p.cmd, p.done)
	eventually(p.t, 10*time.Second, "podman service socket", func() bool {
		_, err := os.Stat(p.sock)
		return err == nil
	})
}

// stop ends the service (the process we started, nothing else).
func (p *podmanService) stop() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
	os.Remove(p.sock)
}

// TestPodmanSource runs the scenario, as far as Podman supports it (no
// --link), through Podman's Docker-compatible service, which the test
// stops and starts for real.
func TestPodmanSource(t *testing.T) {
	p := newPodman(t)
	e := p.eng
	img := busyboxImage(t, "podman")
	net, third := e.networkIn(t, "10.204", nil)
	subnet := fmt.Sprintf("10.204.%d.0/24", third)

	src, sink := startSource(t, p.endpoint())
	eventually(t, 10*time.Second, "first sync", src.Synced)
	if v := src.APIVersion(); v != "1.41" {
		t.Errorf("negotiated API version %q, want the service's 1.41", v)
	}

	c1 := natestName("centos-1")
	id1 := e.run(t, c1, "--network", net, "--network-alias", "c1", "--label", "com.docker.compose.service=web", img, "sleep", "600")
	rep := natestName("web-2")
	e.run(t, rep, "--network", net, "--label", "com.docker.compose.service=web", img, "sleep", "600")
	ip1, ipRep := e.ip(t, c1, net), e.ip(t, rep, net)
	for _, name := range []string{c1, "c1", id1[:12]} {
		eventually(t, 2*time.Second, name+"."+net+" resolves to "+ip1.String(), func() bool {
			return slices.Equal(sink.lookup(name, net), []netip.Addr{ip1})
		})
	}
	eventually(t, 2*time.Second, "web."+net+" has both replicas", func() bool {
		return slices.Equal(sink.lookup("web", net), addrs(ip1, ipRep))
	})
	sink.checkNetwork(t, net, subnet, fmt.Sprintf("10.204.%d.1", third))

	// Restart onto another address.
	e.must(t, "stop", "-t", "0", c1)
	eventually(t, 2*time.Second, "stopped container gone", func() bool { return sink.lookup(c1, net) == nil })
	thief := natestName("thief")
	e.run(t, thief, "--network", net, "--ip", ip1.String(), img, "sleep", "600")
	e.must(t, "start", c1)
	ip1b := e.ip(t, c1, net)
	if ip1b == ip1 {
		t.Fatalf("container kept %v although another took it", ip1)
	}
	eventually(t, 2*time.Second, "new address after restart", func() bool {
		return slices.Equal(sink.lookup(c1, net), []netip.Addr{ip1b})
	})

	// Rename: the new name resolves, the old one no longer.
	c1r := natestName("renamed")
	e.must(t, "rename", c1, c1r)
	t.Cleanup(func() { e.cmd("rm", "-f", c1r).Run() })
	eventually(t, 2*time.Second, "renamed container under its new name", func() bool {
		return slices.Equal(sink.lookup(c1r, net), []netip.Addr{ip1b}) && sink.lookup(c1, net) == nil
	})

	// network connect / disconnect (Podman's events name the container,
	// not the network).
	other, _ := e.networkIn(t, "10.204", func(int) []string { return []string{"--disable-dns"} })
	e.must(t, "network", "connect", "--alias", "extra", other, c1r)
	eventually(t, 2*time.Second, "alias on the connected network", func() bool {
		return slices.Equal(sink.lookup("extra", other), []netip.Addr{e.ip(t, c1r, other)})
	})
	e.must(t, "network", "disconnect", other, c1r)
	eventually(t, 2*time.Second, "gone from the disconnected network", func() bool {
		return sink.lookup(c1r, other) == nil
	})

	// Podman's default network: NAME.podman.
	c3 := natestName("ondefault")
	e.run(t, c3, img, "sleep", "600")
	ip3 := e.ip(t, c3, "podman")
	eventually(t, 2*time.Second, c3+".podman resolves", func() bool {
		return slices.Equal(sink.lookup(c3, "podman"), []netip.Addr{ip3})
	})

	e.must(t, "rm", "-f", "-t", "0", rep)
	eventually(t, time.Second, "removed replica dropped", func() bool {
		return slices.Equal(sink.lookup("web", net), []netip.Addr{ip1b})
	})

	// The service stops for real; a container is removed meanwhile.
	p.stop()
	eventually(t, 5*time.Second, "source marked stale", sink.isStale)
	if got := sink.lookup(thief, net); len(got) != 1 {
		t.Errorf("while the service is down, %s = %v, want last known record", thief, got)
	}
	e.must(t, "rm", "-f", "-t", "0", thief)
	p.start()
	eventually(t, 8*time.Second, "resynced, stale cleared", func() bool { return !sink.isStale() })
	if got := sink.lookup(thief, net); got != nil {
		t.Errorf("container removed while the service was down still resolves: %v", got)
	}
	for name, net := range map[string]string{c1r: net, c3: "podman"} {
		if got := sink.lookup(name, net); len(got) != 1 {
			t.Errorf("running %s.%s lost across the outage: %v", name, net, got)
		}
	}
	e.must(t, "rm", "-f", "-t", "0", c3)
	eventually(t, 2*time.Second, "event after reconnect", func() bool { return sink.lookup(c3, "podman") == nil })
}
