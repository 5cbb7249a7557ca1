package test

// The runtime fronts in the crash matrix: the CNI plugin's ADD (op
// "attach") and the Docker driver's CreateEndpoint (op
// "docker-endpoint") are killed at each of their crash points, then the
// runtime does what it does after a failed call, and the invariant is
// checked as for the CLI's operations (TestCrashMatrix).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netalias/netalias/dockerdriver"
	"github.com/netalias/netalias/state"
)

// killedBySIGKILL says whether err is the exit of a process SIGKILL ended.
func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	return false
}

// crashInvariant checks the invariant with both oracles after point.
func (e *agentEnv) crashInvariant(t *testing.T, nss []string, when string) {
	t.Helper()
	if bad := settle(t, e.dir, nss, 5*time.Second); len(bad) > 0 {
		t.Errorf("oracle %s: %d inconsistencies:\n%s", when, len(bad), strings.Join(bad, "\n"))
	}
	if r := e.run("check"); r.code != 0 {
		t.Errorf("netalias check %s: exit %d:\n%s%s", when, r.code, r.stdout, r.stderr)
	}
}

// cniFront is a runtime calling the netalias binary as its CNI plugin
// directly (CNI_* environment, network configuration on stdin), as libcni
// does, on network NETWORK of the agentEnv's state directory.
type cniFront struct {
	e       *agentEnv
	network string
	peer    netip.Addr // an address on the network to ping
}

type cniCall struct {
	stdout, stderr string
	err            error
}

// call runs CNI command cmd for containerID's eth0 in namespace ns, with
// NETALIAS_CRASH_AT=crashAt when it is set.
func (c *cniFront) call(cmd, containerID, ns, crashAt string) cniCall {
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "crashcni", "type": "netalias",
		"network": c.network, "stateDir": c.e.dir})
	x := exec.Command(c.e.bin)
	x.Stdin = bytes.NewReader(conf)
	x.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID="+containerID, "CNI_NETNS=/run/netns/"+ns,
		"CNI_IFNAME=eth0", "CNI_PATH="+filepath.Dir(c.e.bin), "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=pod-"+containerID[:8])
	if crashAt != "" {
		x.Env = append(x.Env, "NETALIAS_CRASH_AT="+crashAt)
	}
	var o, er bytes.Buffer
	x.Stdout, x.Stderr = &o, &er
	err := x.Run()
	return cniCall{o.String(), er.String(), err}
}

// attachments returns the records of containerID's attachments.
func (c *cniFront) attachments(containerID string) []state.Endpoint {
	var out []state.Endpoint
	for _, ep := range c.e.file(c.network).Endpoints {
		if ep.Attachment != nil && ep.Attachment.ID == containerID {
			out = append(out, ep)
		}
	}
	return out
}

// crash kills ADD at point, then runs DEL as a runtime cleaning up after
// a failed ADD does (libcni, Podman, containerd); in a second namespace
// it kills ADD at point again and retries the ADD, which must attach
// exactly once with a working address, then DEL.
func (c *cniFront) crash(t *testing.T, point string, newNS func() string, nss func() []string) {
	t.Helper()
	killAdd := func() (id, ns string) {
		t.Helper()
		id, ns = agRand()+agRand(), newNS()
		if r := c.call("ADD", id, ns, point); !killedBySIGKILL(r.err) {
			t.Fatalf("CNI ADD with NETALIAS_CRASH_AT=%s was not killed (%v): the point was never reached\n%s%s", point, r.err, r.stdout, r.stderr)
		}
		return id, ns
	}
	del := func(id, ns, when string) {
		t.Helper()
		if r := c.call("DEL", id, ns, ""); r.err != nil {
			t.Errorf("CNI DEL %s: %v\n%s%s", when, r.err, r.stdout, r.stderr)
		}
		if left := c.attachments(id); len(left) > 0 {
			t.Errorf("after DEL %s: %d records of the attachment left: %+v", when, len(left), left)
		}
		if out, err := exec.Command("ip", "-n", ns, "link", "show", "eth0").CombinedOutput(); err == nil {
			t.Errorf("after DEL %s: eth0 still in %s:\n%s", when, ns, out)
		}
	}

	// The runtime cleans up.
	id, ns := killAdd()
	del(id, ns, "after the killed ADD")
	c.e.crashInvariant(t, nss(), "after "+point+" and DEL")

	// The runtime retries.
	id, ns = killAdd()
	r := c.call("ADD", id, ns, "")
	if r.err != nil {
		t.Fatalf("CNI ADD retried after %s: %v\n%s%s", point, r.err, r.stdout, r.stderr)
	}
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res.IPs) == 0 {
		t.Fatalf("CNI ADD retried after %s printed %q (%v)", point, r.stdout, err)
	}
	eps := c.attachments(id)
	if len(eps) != 1 || !strings.HasPrefix(res.IPs[0].Address, eps[0].IPv4.String()+"/") {
		t.Errorf("retried ADD after %s: Result %s, records %+v: want exactly one with the Result's address", point, res.IPs[0].Address, eps)
	}
	if err := agPing(ns, c.peer.String()); err != nil {
		t.Errorf("retried ADD after %s: ping %s from %s: %v", point, c.peer, ns, err)
	}
	c.e.crashInvariant(t, nss(), "after "+point+" and a retried ADD")
	del(id, ns, "after the retried ADD")
	c.e.crashInvariant(t, nss(), "after "+point+", a retried ADD and DEL")
}

// dockerFront is `netalias-full docker-plugin` on the agentEnv's state
// directory, driven over its socket the way dockerd drives it, with no
// dockerd: the plugin needs none to start (its collector asks
// --docker-host only on its timer, here a socket that does not exist, so
// the machine's dockerd is never asked). A Docker network adopts the
// netalias network.
//
// The plugin is netalias-full, not the light netalias: that one reads
// (and unsets) NETALIAS_CRASH_AT before it runs netalias-full.
type dockerFront struct {
	e         *agentEnv
	bin       string
	name      string
	sock      string
	host      string // --docker-host
	logPath   string
	network   string
	dockerNet string // Docker's network ID
	poolID    string
	bits      int // the subnet's prefix length
	cmd       *exec.Cmd
	exited    chan error
	client    *http.Client
}

func dockerID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newDockerFront(t *testing.T, e *agentEnv, network string) *dockerFront {
	t.Helper()
	tmp := t.TempDir()
	d := &dockerFront{e: e, bin: binary(t, "netalias-full"), name: natestName("natest-crash"),
		host: "unix://" + filepath.Join(tmp, "no-dockerd.sock"), logPath: filepath.Join(tmp, "plugin.log"),
		network: network, dockerNet: dockerID()}
	d.sock = dockerdriver.SocketPath(d.name)
	d.client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.sock)
		},
		DisableKeepAlives: true,
	}}
	d.start(t, "")
	// Only up while its own crash points run: the CLI's crash points
	// must meet no other process that repairs.
	defer d.stop(t)
	t.Cleanup(func() {
		d.stop(t)
		if _, err := os.Stat(d.sock); err == nil {
			t.Errorf("plugin socket %s left behind", d.sock)
			os.Remove(d.sock)
		}
	})
	f := e.file(network)
	d.bits = f.Network.Subnet.Bits()
	var pool struct{ PoolID, Pool string }
	d.must(t, "/IpamDriver.RequestPool", map[string]any{"AddressSpace": dockerdriver.LocalAddressSpace,
		"Options": map[string]string{dockerdriver.OptNetwork: network}}, &pool)
	if pool.Pool != f.Network.Subnet.String() {
		t.Fatalf("RequestPool for netalias network %s: pool %s, want its subnet %s", network, pool.Pool, f.Network.Subnet)
	}
	d.poolID = pool.PoolID
	gw := netip.PrefixFrom(f.Network.Gateway, d.bits).String()
	d.must(t, "/NetworkDriver.CreateNetwork", map[string]any{"NetworkID": d.dockerNet,
		"Options":  map[string]any{"com.docker.network.generic": map[string]any{dockerdriver.OptNetwork: network}},
		"IPv4Data": []map[string]any{{"AddressSpace": dockerdriver.LocalAddressSpace, "Pool": pool.Pool, "Gateway": gw}}}, nil)
	return d
}

// start runs the plugin (with NETALIAS_CRASH_AT=crashAt when set) and
// waits until it answers.
func (d *dockerFront) start(t *testing.T, crashAt string) {
	t.Helper()
	log, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	d.cmd = exec.Command(d.bin, "--state-dir", d.e.dir, "docker-plugin", "--name", d.name, "--docker-host", d.host)
	d.cmd.Env = os.Environ()
	if crashAt != "" {
		d.cmd.Env = append(d.cmd.Env, "NETALIAS_CRASH_AT="+crashAt)
	}
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("netalias-full docker-plugin: %v", err)
	}
	d.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(d.cmd, d.exited)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// A killed plugin's socket file stays until the next one
		// replaces it: wait for an answer, not for the file.
		if code, _, err := d.post("/NetworkDriver.GetCapabilities", nil); err == nil && code == http.StatusOK {
			return
		}
		select {
		case err := <-d.exited:
			d.cmd = nil
			t.Fatalf("docker-plugin exited at start: %v\n%s", err, d.logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-plugin did not answer on %s within 10s\n%s", d.sock, d.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the plugin (SIGTERM).
func (d *dockerFront) stop(t *testing.T) {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		t.Errorf("docker-plugin ignored SIGTERM for 15s")
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
}

func (d *dockerFront) logTail() string {
	b, _ := os.ReadFile(d.logPath)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// post sends one driver call; body nil sends an empty body. It returns
// the HTTP status and the answer.
func (d *dockerFront) post(path string, body any) (int, []byte, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return 0, nil, err
		}
	}
	req, err := http.NewRequest(http.MethodPost, "http://plugin"+path, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", dockerdriver.ContentType)
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// must sends a driver call that must succeed and decodes its answer into
// into (when not nil).
func (d *dockerFront) must(t *testing.T, path string, body, into any) {
	t.Helper()
	code, out, err := d.post(path, body)
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s: status %d, %v: %s\n%s", path, code, err, out, d.logTail())
	}
	if into != nil {
		if err := json.Unmarshal(out, into); err != nil {
			t.Fatalf("%s answered %s: %v", path, out, err)
		}
	}
}

// requestAddress asks the IPAM driver for an address (want when valid).
func (d *dockerFront) requestAddress(t *testing.T, want netip.Addr) netip.Addr {
	t.Helper()
	req := map[string]any{"PoolID": d.poolID}
	if want.IsValid() {
		req["Address"] = want.String()
	}
	var resp struct{ Address string }
	d.must(t, "/IpamDriver.RequestAddress", req, &resp)
	p, err := netip.ParsePrefix(resp.Address)
	if err != nil || (want.IsValid() && p.Addr() != want) {
		t.Fatalf("RequestAddress %v: answered %q (%v)", want, resp.Address, err)
	}
	return p.Addr()
}

func (d *dockerFront) releaseAddress(t *testing.T, a netip.Addr) {
	t.Helper()
	d.must(t, "/IpamDriver.ReleaseAddress", map[string]any{"PoolID": d.poolID, "Address": a.String()}, nil)
}

func (d *dockerFront) createEndpoint(endpointID string, a netip.Addr) (int, []byte, error) {
	return d.post("/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": d.dockerNet, "EndpointID": endpointID,
		"Interface": map[string]any{"Address": netip.PrefixFrom(a, d.bits).String()}, "Options": map[string]any{}})
}

// dockerPairLinks lists the host's veth ends the Docker driver names (nav*, and
// the nap* peers it leaves for Docker to move in).
func dockerPairLinks(t *testing.T) []string {
	var out []string
	for _, n := range agLinks(t) {
		if strings.HasPrefix(n, "nav") || strings.HasPrefix(n, "nap") {
			out = append(out, n)
		}
	}
	return out
}

// records returns the Docker records holding a or naming endpointID.
func (d *dockerFront) records(a netip.Addr, endpointID string) []state.Endpoint {
	var out []state.Endpoint
	for _, ep := range d.e.file(d.network).Endpoints {
		if ep.Attachment != nil && ep.Attachment.Runtime == state.RuntimeDocker &&
			(ep.IPv4 == a || ep.Attachment.ID == endpointID) {
			out = append(out, ep)
		}
	}
	return out
}

// crash kills the plugin in CreateEndpoint at point, twice. dockerd's
// plugin client resends a call whose connection failed (with the body it
// already sent drained: an empty request) until the plugin answers, and
// after a failed CreateEndpoint libnetwork releases the endpoint's
// addresses and sends no DeleteEndpoint (Network.createEndpoint): the
// first round does exactly that. The second retries the CreateEndpoint
// in full, which must succeed, then removes the endpoint as Docker does
// (DeleteEndpoint, ReleaseAddress). After each, nothing of the endpoint
// may remain, and its address must be free.
func (d *dockerFront) crash(t *testing.T, point string, nss []string) {
	t.Helper()
	d.start(t, "")
	defer d.stop(t)
	before := dockerPairLinks(t)
	killCreate := func() (string, netip.Addr) {
		t.Helper()
		a := d.requestAddress(t, netip.Addr{})
		id := dockerID()
		d.stop(t)
		d.start(t, point)
		if code, out, err := d.createEndpoint(id, a); err == nil {
			t.Fatalf("CreateEndpoint with NETALIAS_CRASH_AT=%s answered (status %d: %s): the point was never reached", point, code, out)
		}
		select {
		case err := <-d.exited:
			d.cmd = nil
			if !killedBySIGKILL(err) {
				t.Fatalf("docker-plugin with NETALIAS_CRASH_AT=%s ended with %v, not SIGKILL\n%s", point, err, d.logTail())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("docker-plugin with NETALIAS_CRASH_AT=%s still runs after its connection failed", point)
		}
		d.start(t, "")
		return id, a
	}
	clean := func(id string, a netip.Addr, when string) {
		t.Helper()
		d.e.crashInvariant(t, nss, when)
		if recs := d.records(a, id); len(recs) > 0 {
			t.Errorf("%s: Docker records of endpoint %.12s or address %s left: %+v", when, id, a, recs)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			var extra []string
			for _, l := range dockerPairLinks(t) {
				if !slices.Contains(before, l) {
					extra = append(extra, l)
				}
			}
			if len(extra) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: veths %v left on the host", when, extra)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		// The address is free again (Docker may hand it out).
		d.releaseAddress(t, d.requestAddress(t, a))
	}

	id, a := killCreate()
	if code, out, err := d.post("/NetworkDriver.CreateEndpoint", nil); err != nil || code == http.StatusOK {
		t.Errorf("CreateEndpoint resent drained (empty) after %s: status %d, %v: %s; want a refusal", point, code, err, out)
	}
	d.releaseAddress(t, a)
	clean(id, a, fmt.Sprintf("after %s and dockerd's rollback (ReleaseAddress %s)", point, a))

	id, a = killCreate()
	if code, out, err := d.createEndpoint(id, a); err != nil || code != http.StatusOK {
		t.Fatalf("CreateEndpoint retried after %s: status %d, %v: %s\n%s", point, code, err, out, d.logTail())
	}
	if recs := d.records(a, id); len(recs) != 1 || recs[0].HostVeth == "" || recs[0].Attachment.ID != id {
		t.Errorf("CreateEndpoint retried after %s: records %+v, want one endpoint %.12s with its veth", point, recs, id)
	}
	d.e.crashInvariant(t, nss, "after "+point+" and a retried CreateEndpoint")
	d.must(t, "/NetworkDriver.DeleteEndpoint", map[string]any{"NetworkID": d.dockerNet, "EndpointID": id}, nil)
	d.releaseAddress(t, a)
	clean(id, a, fmt.Sprintf("after %s, a retried CreateEndpoint, DeleteEndpoint and ReleaseAddress %s", point, a))
}
