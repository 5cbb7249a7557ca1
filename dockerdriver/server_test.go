package dockerdriver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/libnetwork/driverapi"
	"github.com/docker/docker/libnetwork/drivers/remote/api"
	"github.com/docker/docker/libnetwork/ipamapi"
	ipamapi2 "github.com/docker/docker/libnetwork/ipams/remote/api"
	"github.com/docker/docker/libnetwork/netlabel"
	"github.com/docker/docker/pkg/plugins"
	"github.com/docker/go-connections/tlsconfig"
)

// harness is one plugin process: a Server on a unix socket in a temporary
// directory, and dockerd's own plugin client talking to it.
type harness struct {
	t     *testing.T
	dir   string // state directory
	sock  string
	fake  *fakeBackend
	srv   *Server
	cl    *plugins.Client
	done  chan error
	close context.CancelFunc
	addr6 map[string]netip.Prefix // IPv6 address of each container, by endpoint
}

func startPlugin(t *testing.T, dir string, fake *fakeBackend) *harness {
	t.Helper()
	return startPluginAt(t, dir, fake, filepath.Join(t.TempDir(), "natest.sock"))
}

func startPluginAt(t *testing.T, dir string, fake *fakeBackend, sock string) *harness {
	t.Helper()
	h := &harness{t: t, dir: dir, fake: fake, sock: sock, done: make(chan error, 1), addr6: map[string]netip.Prefix{}}
	var err error
	h.srv, err = New(Config{Name: "natest", Socket: h.sock, StateDir: dir, Backend: fake,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := h.srv.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.close = cancel
	go func() { h.done <- h.srv.Serve(ctx) }()
	// dockerd's client, configured as dockerd configures it for a
	// legacy plugin's unix socket.
	if h.cl, err = plugins.NewClientWithTimeout("unix://"+h.sock, &tlsconfig.Options{InsecureSkipVerify: true}, 5*time.Second); err != nil {
		t.Fatalf("plugin client: %v", err)
	}
	t.Cleanup(h.stop)
	return h
}

// stop shuts the plugin down (idempotent) and checks the socket is gone.
func (h *harness) stop() {
	if h.close == nil {
		return
	}
	h.close()
	h.close = nil
	if err := <-h.done; err != nil {
		h.t.Errorf("Serve: %v", err)
	}
	if _, err := os.Stat(h.sock); !errors.Is(err, os.ErrNotExist) {
		h.t.Errorf("socket %s still there after shutdown (stat: %v)", h.sock, err)
	}
}

func (h *harness) call(method string, req, resp any) error {
	return h.cl.Call(method, req, resp)
}

func (h *harness) must(method string, req, resp any) {
	h.t.Helper()
	if err := h.call(method, req, resp); err != nil {
		h.t.Fatalf("%s: %v", method, err)
	}
}

// raw posts body to method without Docker's client, for status codes and
// headers.
func (h *harness) raw(method, body string) (int, http.Header, []byte) {
	h.t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", h.sock)
	}}}
	req, _ := http.NewRequest(http.MethodPost, "http://plugin/"+method, strings.NewReader(body))
	req.Header.Set("Accept", ContentType)
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatalf("POST %s: %v", method, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// dockerNet is what `docker network create` asks, in dockerd's order:
// IPAM pool (and gateway) first, then the driver's CreateNetwork.
type dockerNet struct {
	id       string
	subnet   string            // --subnet
	gateway  string            // --gateway
	ipamOpts map[string]string // --ipam-opt
	opts     map[string]string // -o
	internal bool
	ipv6     bool
	subnet6  string
}

type createdNet struct {
	poolID, poolID6 string
	pool, pool6     netip.Prefix
	gw, gw6         netip.Prefix
}

func dockerID(n byte) string {
	return strings.Repeat(string("0123456789abcdef"[n%16]), 64)
}

func netIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// ipamPool does dockerd's RequestPool and, as dockerd does, requests the
// gateway only when --gateway was given or the pool brought none.
func (h *harness) ipamPool(n dockerNet, v6 bool) (id string, pool, gw netip.Prefix, err error) {
	subnet, gateway := n.subnet, n.gateway
	if v6 {
		subnet, gateway = n.subnet6, ""
	}
	var pr ipamapi2.RequestPoolResponse
	if err = h.call("IpamDriver.RequestPool", &ipamapi2.RequestPoolRequest{AddressSpace: LocalAddressSpace, Pool: subnet, Options: n.ipamOpts, V6: v6}, &pr); err != nil {
		return
	}
	if pool, err = netip.ParsePrefix(pr.Pool); err != nil {
		h.t.Fatalf("RequestPool answered pool %q: %v", pr.Pool, err)
	}
	id = pr.PoolID
	if g, ok := pr.Data[netlabel.Gateway]; ok && gateway == "" {
		if gw, err = netip.ParsePrefix(g); err != nil {
			h.t.Fatalf("RequestPool answered gateway %q: %v", g, err)
		}
		return
	}
	var ar ipamapi2.RequestAddressResponse
	if err = h.call("IpamDriver.RequestAddress", &ipamapi2.RequestAddressRequest{PoolID: id, Address: gateway,
		Options: map[string]string{ipamapi.RequestAddressType: netlabel.Gateway}}, &ar); err != nil {
		h.call("IpamDriver.ReleasePool", &ipamapi2.ReleasePoolRequest{PoolID: id}, &ipamapi2.ReleasePoolResponse{})
		return
	}
	gw, err = netip.ParsePrefix(ar.Address)
	return
}

// createNetwork runs dockerd's network create, releasing the pools when
// the driver refuses, as dockerd does.
func (h *harness) createNetwork(n dockerNet) (createdNet, error) {
	var c createdNet
	var err error
	if c.poolID, c.pool, c.gw, err = h.ipamPool(n, false); err != nil {
		return c, err
	}
	v4 := []driverapi.IPAMData{{AddressSpace: LocalAddressSpace, Pool: netIPNet(c.pool), Gateway: netIPNet(c.gw)}}
	var v6 []driverapi.IPAMData
	if n.ipv6 {
		if c.poolID6, c.pool6, c.gw6, err = h.ipamPool(n, true); err != nil {
			h.call("IpamDriver.ReleasePool", &ipamapi2.ReleasePoolRequest{PoolID: c.poolID}, &ipamapi2.ReleasePoolResponse{})
			return c, err
		}
		v6 = []driverapi.IPAMData{{AddressSpace: LocalAddressSpace, Pool: netIPNet(c.pool6), Gateway: netIPNet(c.gw6)}}
	}
	generic := map[string]string{}
	for k, v := range n.opts {
		generic[k] = v
	}
	opts := map[string]any{
		netlabel.GenericData: generic,
		netlabel.EnableIPv6:  n.ipv6,
		netlabel.Internal:    n.internal,
	}
	err = h.call("NetworkDriver.CreateNetwork", &api.CreateNetworkRequest{NetworkID: n.id, Options: opts, IPv4Data: v4, IPv6Data: v6}, &api.CreateNetworkResponse{})
	if err != nil {
		for _, id := range []string{c.poolID, c.poolID6} {
			if id != "" {
				h.call("IpamDriver.ReleasePool", &ipamapi2.ReleasePoolRequest{PoolID: id}, &ipamapi2.ReleasePoolResponse{})
			}
		}
	}
	return c, err
}

func (h *harness) mustCreateNetwork(n dockerNet) createdNet {
	h.t.Helper()
	c, err := h.createNetwork(n)
	if err != nil {
		h.t.Fatalf("network create %s: %v", shortID(n.id), err)
	}
	return c
}

// removeNetwork runs dockerd's network rm: the driver first, then the pools.
func (h *harness) removeNetwork(id string, c createdNet) {
	h.t.Helper()
	h.must("NetworkDriver.DeleteNetwork", &api.DeleteNetworkRequest{NetworkID: id}, &api.DeleteNetworkResponse{})
	for _, p := range []struct {
		id string
		gw netip.Prefix
	}{{c.poolID, c.gw}, {c.poolID6, c.gw6}} {
		if p.id == "" {
			continue
		}
		h.must("IpamDriver.ReleaseAddress", &ipamapi2.ReleaseAddressRequest{PoolID: p.id, Address: p.gw.Addr().String()}, &ipamapi2.ReleaseAddressResponse{})
		h.must("IpamDriver.ReleasePool", &ipamapi2.ReleasePoolRequest{PoolID: p.id}, &ipamapi2.ReleasePoolResponse{})
	}
}

// container runs dockerd's endpoint creation and join; it returns the
// address, the CreateEndpoint reply and the Join reply.
func (h *harness) container(netID, epID string, c createdNet, want string) (netip.Prefix, api.CreateEndpointResponse, api.JoinResponse) {
	h.t.Helper()
	var ar ipamapi2.RequestAddressResponse
	h.must("IpamDriver.RequestAddress", &ipamapi2.RequestAddressRequest{PoolID: c.poolID, Address: want}, &ar)
	addr, err := netip.ParsePrefix(ar.Address)
	if err != nil {
		h.t.Fatalf("RequestAddress answered %q: %v", ar.Address, err)
	}
	iface := &api.EndpointInterface{Address: addr.String()}
	if c.poolID6 != "" {
		var ar6 ipamapi2.RequestAddressResponse
		h.must("IpamDriver.RequestAddress", &ipamapi2.RequestAddressRequest{PoolID: c.poolID6}, &ar6)
		a6, err := netip.ParsePrefix(ar6.Address)
		if err != nil || !c.pool6.Contains(a6.Addr()) {
			h.t.Fatalf("RequestAddress IPv6 answered %q (%v), want one in %s", ar6.Address, err, c.pool6)
		}
		h.addr6[epID] = a6
		iface.AddressIPv6 = a6.String()
	}
	var cr api.CreateEndpointResponse
	h.must("NetworkDriver.CreateEndpoint", &api.CreateEndpointRequest{NetworkID: netID, EndpointID: epID, Interface: iface}, &cr)
	var jr api.JoinResponse
	h.must("NetworkDriver.Join", &api.JoinRequest{NetworkID: netID, EndpointID: epID, SandboxKey: "/var/run/docker/netns/" + epID[:12]}, &jr)
	return addr, cr, jr
}

// removeContainer runs dockerd's leave, endpoint delete and address release.
func (h *harness) removeContainer(netID, epID string, c createdNet, addr netip.Prefix) {
	h.t.Helper()
	h.must("NetworkDriver.Leave", &api.LeaveRequest{NetworkID: netID, EndpointID: epID}, &api.LeaveResponse{})
	h.must("NetworkDriver.DeleteEndpoint", &api.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID}, &api.DeleteEndpointResponse{})
	h.must("IpamDriver.ReleaseAddress", &ipamapi2.ReleaseAddressRequest{PoolID: c.poolID, Address: addr.Addr().String()}, &ipamapi2.ReleaseAddressResponse{})
	if a6, ok := h.addr6[epID]; ok {
		h.must("IpamDriver.ReleaseAddress", &ipamapi2.ReleaseAddressRequest{PoolID: c.poolID6, Address: a6.Addr().String()}, &ipamapi2.ReleaseAddressResponse{})
		delete(h.addr6, epID)
	}
}

func readMap(t *testing.T, dir string) map[string]*mapping {
	t.Helper()
	m, err := loadMap(MapPath(dir, "natest"))
	if err != nil {
		t.Fatalf("map: %v", err)
	}
	return m
}

func TestActivateManifest(t *testing.T) {
	h := startPlugin(t, t.TempDir(), newFake())
	status, hdr, body := h.raw("Plugin.Activate", "")
	if status != http.StatusOK {
		t.Fatalf("Activate: status %d %s", status, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/vnd.docker.plugins.v1.2+json" {
		t.Errorf("Content-Type %q", ct)
	}
	// What dockerd decodes the manifest into.
	var m plugins.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest %s: %v", body, err)
	}
	if strings.Join(m.Implements, ",") != "NetworkDriver,IpamDriver" {
		t.Errorf("Implements = %v, want [NetworkDriver IpamDriver]", m.Implements)
	}
	var caps api.GetCapabilityResponse
	h.must("NetworkDriver.GetCapabilities", nil, &caps)
	if caps.Scope != "local" || caps.ConnectivityScope != "local" {
		t.Errorf("capabilities %+v, want local scope", caps)
	}
	var icaps ipamapi2.GetCapabilityResponse
	h.must("IpamDriver.GetCapabilities", nil, &icaps)
	if icaps.RequiresMACAddress || icaps.RequiresRequestReplay {
		t.Errorf("IPAM capabilities %+v, want none", icaps)
	}
	var spaces ipamapi2.GetAddressSpacesResponse
	h.must("IpamDriver.GetDefaultAddressSpaces", nil, &spaces)
	if spaces.LocalDefaultAddressSpace != LocalAddressSpace {
		t.Errorf("address spaces %+v", spaces)
	}
}

func TestUnknownMethodIsNotFound(t *testing.T) {
	h := startPlugin(t, t.TempDir(), newFake())
	err := h.call("NetworkDriver.GwAllocCheck", &api.GwAllocCheckerRequest{}, &api.GwAllocCheckerResponse{})
	if !plugins.IsNotFound(err) {
		t.Fatalf("unknown method: err %v, want dockerd's not-found (404)", err)
	}
	if status, _, _ := h.raw("VolumeDriver.Create", "{}"); status != http.StatusNotFound {
		t.Errorf("VolumeDriver.Create: status %d, want 404", status)
	}
}

func TestFailureAnswersErr(t *testing.T) {
	h := startPlugin(t, t.TempDir(), newFake())
	// A Join on a network the plugin never made.
	status, hdr, body := h.raw("NetworkDriver.Join", `{"NetworkID":"`+dockerID(7)+`","EndpointID":"`+dockerID(8)+`"}`)
	var e struct{ Err string }
	if err := json.Unmarshal(body, &e); err != nil || status != http.StatusInternalServerError {
		t.Fatalf("status %d body %s (%v), want 500 with Err", status, body, err)
	}
	if hdr.Get("Content-Type") != ContentType {
		t.Errorf("Content-Type %q", hdr.Get("Content-Type"))
	}
	if !strings.Contains(e.Err, "docker network 777777777777 is unknown") {
		t.Errorf("Err %q does not name the network", e.Err)
	}
	// dockerd's client turns it into an error carrying the message.
	err := h.call("NetworkDriver.Join", &api.JoinRequest{NetworkID: dockerID(7), EndpointID: dockerID(8)}, &api.JoinResponse{})
	if err == nil || !strings.Contains(err.Error(), "777777777777 is unknown") {
		t.Errorf("dockerd sees %v", err)
	}
	// IPAM failures: dockerd's IPAM response type reads "Error".
	status, _, body = h.raw("IpamDriver.RequestAddress", `{"PoolID":"bogus"}`)
	var ie ipamapi2.RequestAddressResponse
	if err := json.Unmarshal(body, &ie); err != nil || status != http.StatusInternalServerError || !strings.Contains(ie.Error, `pool ID "bogus"`) {
		t.Errorf("IPAM failure: status %d body %s", status, body)
	}
	// Malformed JSON is a failure that says so.
	if status, _, body = h.raw("NetworkDriver.CreateNetwork", `{"NetworkID":`); status != http.StatusInternalServerError || !bytes.Contains(body, []byte("malformed request")) {
		t.Errorf("malformed: status %d body %s", status, body)
	}
}

// TestDockerLifecycle runs what dockerd sends for `docker network create`,
// `docker run`, `docker rm -f` and `docker network rm`, and checks each
// answer and what the backend holds at every stage.
func TestDockerLifecycle(t *testing.T) {
	fake := newFake()
	dir := t.TempDir()
	h := startPlugin(t, dir, fake)
	netID := dockerID(1)
	c := h.mustCreateNetwork(dockerNet{id: netID, opts: map[string]string{OptNetwork: "testnet"}})
	if c.pool != netip.MustParsePrefix("10.99.1.0/24") || c.gw != netip.MustParsePrefix("10.99.1.1/24") {
		t.Fatalf("pool %s gateway %s, want the backend's choice 10.99.1.0/24 and its first host", c.pool, c.gw)
	}
	info, err := fake.Network("testnet")
	if err != nil || info.Subnet != c.pool || info.Gateway != c.gw.Addr() || info.Internal {
		t.Fatalf("netalias network: %+v %v", info, err)
	}
	if m := readMap(t, dir)[netID]; m == nil || m.Network != "testnet" || !m.Created {
		t.Fatalf("map entry %+v, want testnet created", m)
	}

	ep := dockerID(2)
	addr, cr, jr := h.container(netID, ep, c, "")
	if addr != netip.MustParsePrefix("10.99.1.2/24") {
		t.Errorf("address %s, want 10.99.1.2/24 from the backend", addr)
	}
	if cr.Interface == nil || cr.Interface.Address != "" || cr.Interface.AddressIPv6 != "" || cr.Interface.MacAddress != "02:42:0a:63:01:02" {
		t.Errorf("CreateEndpoint reply %+v: want only the MAC Docker left empty", cr.Interface)
	}
	if jr.InterfaceName == nil || jr.InterfaceName.SrcName != "nap"+ep[:12] || jr.InterfaceName.DstPrefix != "eth" {
		t.Errorf("Join interface %+v", jr.InterfaceName)
	}
	if jr.Gateway != "10.99.1.1" || jr.GatewayIPv6 != "" || jr.DisableGatewayService {
		t.Errorf("Join gateway %q/%q disable=%v", jr.Gateway, jr.GatewayIPv6, jr.DisableGatewayService)
	}
	var oi api.EndpointInfoResponse
	h.must("NetworkDriver.EndpointOperInfo", &api.EndpointInfoRequest{NetworkID: netID, EndpointID: ep}, &oi)
	if oi.Value[OptNetwork] != "testnet" {
		t.Errorf("EndpointOperInfo %v", oi.Value)
	}
	h.must("NetworkDriver.ProgramExternalConnectivity", &api.ProgramExternalConnectivityRequest{NetworkID: netID, EndpointID: ep,
		Options: map[string]any{netlabel.PortMap: []any{}}}, &api.ProgramExternalConnectivityResponse{})
	h.must("NetworkDriver.RevokeExternalConnectivity", &api.RevokeExternalConnectivityRequest{NetworkID: netID, EndpointID: ep}, &api.RevokeExternalConnectivityResponse{})
	h.must("NetworkDriver.DiscoverNew", &api.DiscoveryNotification{DiscoveryType: 1, DiscoveryData: map[string]any{"Address": "10.0.0.1"}}, &api.DiscoveryResponse{})
	h.must("NetworkDriver.DiscoverDelete", &api.DiscoveryNotification{DiscoveryType: 1}, &api.DiscoveryResponse{})

	// A second container asking for an address (--ip) gets it.
	ep2 := dockerID(3)
	addr2, _, _ := h.container(netID, ep2, c, "10.99.1.77")
	if addr2 != netip.MustParsePrefix("10.99.1.77/24") {
		t.Errorf("--ip 10.99.1.77: got %s", addr2)
	}
	// A taken address is refused, naming the network.
	err = h.call("IpamDriver.RequestAddress", &ipamapi2.RequestAddressRequest{PoolID: c.poolID, Address: "10.99.1.77"}, &ipamapi2.RequestAddressResponse{})
	if err == nil || !strings.Contains(err.Error(), `netalias network "testnet"`) {
		t.Errorf("taken address: %v", err)
	}

	h.removeContainer(netID, ep, c, addr)
	h.removeContainer(netID, ep2, c, addr2)
	if ok, reserved, eps := fake.snapshot("testnet"); !ok || len(reserved) != 0 || eps != 0 {
		t.Fatalf("after docker rm: network %v, reservations %v, endpoints %d; want none", ok, reserved, eps)
	}
	// dockerd repeats a delete it is unsure of: still fine.
	h.must("NetworkDriver.DeleteEndpoint", &api.DeleteEndpointRequest{NetworkID: netID, EndpointID: ep}, &api.DeleteEndpointResponse{})

	h.removeNetwork(netID, c)
	if _, err := fake.Network("testnet"); !errors.Is(err, ErrNotFound) {
		t.Errorf("netalias network made by the plugin survives docker network rm: %v", err)
	}
	if m := readMap(t, dir); len(m) != 0 {
		t.Errorf("map after network rm: %v", m)
	}
	h.must("NetworkDriver.DeleteNetwork", &api.DeleteNetworkRequest{NetworkID: netID}, &api.DeleteNetworkResponse{})
}

func TestNetworkAdoptedIsLeftAlone(t *testing.T) {
	fake := newFake()
	fake.addAgentNetwork(NetworkInfo{Name: "shared", Subnet: netip.MustParsePrefix("10.88.0.0/24"), Gateway: netip.MustParsePrefix("10.88.0.1/32").Addr()})
	h := startPlugin(t, t.TempDir(), fake)

	// --ipam-opt names it: the pool is its subnet, the gateway its gateway.
	id := dockerID(1)
	c := h.mustCreateNetwork(dockerNet{id: id, ipamOpts: map[string]string{OptNetwork: "shared"}})
	if c.pool.String() != "10.88.0.0/24" || c.gw.String() != "10.88.0.1/24" {
		t.Fatalf("pool %s gateway %s, want the netalias network's 10.88.0.0/24 and 10.88.0.1", c.pool, c.gw)
	}
	if m := readMap(t, h.dir)[id]; m == nil || m.Network != "shared" || m.Created {
		t.Fatalf("map entry %+v, want shared adopted", m)
	}
	// One Docker network per netalias network.
	_, err := h.createNetwork(dockerNet{id: dockerID(2), subnet: "10.88.0.0/24", opts: map[string]string{OptNetwork: "shared"}})
	if err == nil || !strings.Contains(err.Error(), "belongs to Docker network 111111111111") {
		t.Errorf("second Docker network on shared: %v", err)
	}
	h.removeNetwork(id, c)
	if _, err := fake.Network("shared"); err != nil {
		t.Fatalf("docker network rm removed a netalias network the plugin did not make: %v", err)
	}

	// -o plus --subnet adopts too; -o alone cannot know the subnet in
	// time (Docker asks for the pool first) and says what to give.
	_, err = h.createNetwork(dockerNet{id: dockerID(3), opts: map[string]string{OptNetwork: "shared"}})
	if err == nil || !strings.Contains(err.Error(), "give --subnet 10.88.0.0/24") {
		t.Errorf("-o netalias.network=shared without --subnet: %v", err)
	}
	c = h.mustCreateNetwork(dockerNet{id: dockerID(4), subnet: "10.88.0.0/24", opts: map[string]string{OptNetwork: "shared"}})
	h.removeNetwork(dockerID(4), c)
	if _, err := fake.Network("shared"); err != nil {
		t.Fatalf("adopted network removed: %v", err)
	}
	if len(fake.created) != 0 {
		t.Errorf("backend asked to create %v", fake.created)
	}
	// Isolation must match: an adopted network keeps its own.
	_, err = h.createNetwork(dockerNet{id: dockerID(5), internal: true, ipamOpts: map[string]string{OptNetwork: "shared"}})
	if err == nil || !strings.Contains(err.Error(), `netalias network "shared" is not internal`) {
		t.Errorf("--internal on a non-internal network: %v", err)
	}
}

func TestMapSurvivesRestart(t *testing.T) {
	fake := newFake()
	dir := t.TempDir()
	h := startPlugin(t, dir, fake)
	netID := dockerID(1)
	c := h.mustCreateNetwork(dockerNet{id: netID, subnet: "10.77.3.0/24", gateway: "10.77.3.254", opts: map[string]string{OptNetwork: "testnet"}})
	addr, _, _ := h.container(netID, dockerID(2), c, "")
	h.stop()

	// A new process on the same state directory and socket, at once: the
	// pool IDs dockerd holds, the network's gateway and what the plugin
	// made all still work.
	h = startPluginAt(t, dir, fake, h.sock)
	addr3, _, jr := h.container(netID, dockerID(3), c, "")
	if jr.Gateway != "10.77.3.254" {
		t.Errorf("gateway after restart %q, want 10.77.3.254", jr.Gateway)
	}
	if addr3.Addr() == addr.Addr() || !c.pool.Contains(addr3.Addr()) {
		t.Errorf("address after restart %s (first container %s)", addr3, addr)
	}
	h.removeContainer(netID, dockerID(2), c, addr)
	h.removeContainer(netID, dockerID(3), c, addr3)
	h.removeNetwork(netID, c)
	if _, err := fake.Network("testnet"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after restart the plugin forgot it made testnet: %v", err)
	}
}

func TestInternalDisablesGatewayService(t *testing.T) {
	fake := newFake()
	h := startPlugin(t, t.TempDir(), fake)
	id := dockerID(1)
	c := h.mustCreateNetwork(dockerNet{id: id, internal: true, opts: map[string]string{OptNetwork: "inner"}})
	if info, _ := fake.Network("inner"); !info.Internal {
		t.Fatalf("--internal not passed to the backend: %+v", info)
	}
	_, _, jr := h.container(id, dockerID(2), c, "")
	if !jr.DisableGatewayService || jr.Gateway != "" || jr.GatewayIPv6 != "" {
		t.Errorf("Join on an internal network: gateway %q/%q DisableGatewayService=%v; want no gateway, service disabled", jr.Gateway, jr.GatewayIPv6, jr.DisableGatewayService)
	}
}

func TestDualStack(t *testing.T) {
	fake := newFake()
	h := startPlugin(t, t.TempDir(), fake)
	id := dockerID(1)
	c := h.mustCreateNetwork(dockerNet{id: id, ipv6: true, subnet6: "fd42:1::/64", opts: map[string]string{OptNetwork: "dual", netlabel.DriverMTU: "1400"}})
	info, _ := fake.Network("dual")
	if info.Subnet6.String() != "fd42:1::/64" || info.Gateway6.String() != "fd42:1::1" {
		t.Fatalf("IPv6 not passed to the backend: %+v", info)
	}
	if fake.created[0].MTU != 1400 {
		t.Errorf("MTU %d, want 1400", fake.created[0].MTU)
	}
	addr, _, jr := h.container(id, dockerID(2), c, "")
	if jr.Gateway != info.Gateway.String() || jr.GatewayIPv6 != "fd42:1::1" {
		t.Errorf("Join gateways %q %q", jr.Gateway, jr.GatewayIPv6)
	}
	if a6 := h.addr6[dockerID(2)]; a6.String() != "fd42:1::2/64" {
		t.Errorf("IPv6 address %s, want fd42:1::2/64", a6)
	}
	h.removeContainer(id, dockerID(2), c, addr)
	if _, reserved, eps := fake.snapshot("dual"); len(reserved) != 0 || eps != 0 {
		t.Errorf("after docker rm: reservations %v, endpoints %d", reserved, eps)
	}
	h.removeNetwork(id, c)
	if _, err := fake.Network("dual"); !errors.Is(err, ErrNotFound) {
		t.Errorf("dual-stack network left: %v", err)
	}
}

// TestConcurrentContainers runs container lifecycles in parallel, as
// dockerd does for parallel `docker run`s: every address distinct, nothing
// left behind.
func TestConcurrentContainers(t *testing.T) {
	fake := newFake()
	h := startPlugin(t, t.TempDir(), fake)
	id := dockerID(1)
	c := h.mustCreateNetwork(dockerNet{id: id, opts: map[string]string{OptNetwork: "par"}})
	const n = 16
	addrs := make(chan netip.Addr, n)
	errs := make(chan error, 2*n)
	var up, wg sync.WaitGroup
	release := make(chan struct{})
	for i := range n {
		wg.Add(1)
		up.Add(1)
		go func() {
			defer wg.Done()
			upDone := sync.OnceFunc(up.Done)
			defer upDone()
			ep := fmt.Sprintf("%064x", i+100)
			var ar ipamapi2.RequestAddressResponse
			if err := h.call("IpamDriver.RequestAddress", &ipamapi2.RequestAddressRequest{PoolID: c.poolID}, &ar); err != nil {
				errs <- err
				return
			}
			if err := h.call("NetworkDriver.CreateEndpoint", &api.CreateEndpointRequest{NetworkID: id, EndpointID: ep,
				Interface: &api.EndpointInterface{Address: ar.Address}}, &api.CreateEndpointResponse{}); err != nil {
				errs <- err
				return
			}
			var jr api.JoinResponse
			if err := h.call("NetworkDriver.Join", &api.JoinRequest{NetworkID: id, EndpointID: ep}, &jr); err != nil {
				errs <- err
				return
			}
			a, _ := netip.ParsePrefix(ar.Address)
			addrs <- a.Addr()
			upDone()
			<-release // all containers up at once
			for _, call := range []struct {
				m   string
				req any
			}{
				{"NetworkDriver.Leave", &api.LeaveRequest{NetworkID: id, EndpointID: ep}},
				{"NetworkDriver.DeleteEndpoint", &api.DeleteEndpointRequest{NetworkID: id, EndpointID: ep}},
				{"IpamDriver.ReleaseAddress", &ipamapi2.ReleaseAddressRequest{PoolID: c.poolID, Address: a.Addr().String()}},
			} {
				if err := h.call(call.m, call.req, &api.Response{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	up.Wait()
	seen := map[netip.Addr]bool{}
	for len(addrs) > 0 {
		a := <-addrs
		if seen[a] {
			t.Errorf("address %s handed to two containers", a)
		}
		seen[a] = true
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != n {
		t.Fatalf("%d containers came up, want %d", len(seen), n)
	}
	if _, reserved, eps := fake.snapshot("par"); len(reserved) != 0 || eps != 0 {
		t.Errorf("left behind: reservations %v, endpoints %d", reserved, eps)
	}
}

func TestCreateEndpointKeepsWhatDockerSet(t *testing.T) {
	h := startPlugin(t, t.TempDir(), newFake())
	id := dockerID(1)
	c := h.mustCreateNetwork(dockerNet{id: id})
	var ar ipamapi2.RequestAddressResponse
	h.must("IpamDriver.RequestAddress", &ipamapi2.RequestAddressRequest{PoolID: c.poolID}, &ar)
	// Docker set address and MAC (--mac-address): the reply sets nothing,
	// as dockerd rolls an endpoint back when a reply changes its fields.
	var cr api.CreateEndpointResponse
	h.must("NetworkDriver.CreateEndpoint", &api.CreateEndpointRequest{NetworkID: id, EndpointID: dockerID(2),
		Interface: &api.EndpointInterface{Address: ar.Address, MacAddress: "02:00:00:00:00:01"}}, &cr)
	if cr.Interface != nil {
		t.Errorf("reply interface %+v, want none", cr.Interface)
	}
	// An address from some other IPAM is refused.
	err := h.call("NetworkDriver.CreateEndpoint", &api.CreateEndpointRequest{NetworkID: id, EndpointID: dockerID(3),
		Interface: &api.EndpointInterface{Address: "172.17.0.5/16"}}, &api.CreateEndpointResponse{})
	if err == nil || !strings.Contains(err.Error(), "outside the network's subnet") {
		t.Errorf("foreign address: %v", err)
	}
	// So is no address at all (--ipam-driver null).
	err = h.call("NetworkDriver.CreateEndpoint", &api.CreateEndpointRequest{NetworkID: id, EndpointID: dockerID(4)}, &api.CreateEndpointResponse{})
	if err == nil || !strings.Contains(err.Error(), `IPAM driver "natest"`) {
		t.Errorf("no address: %v", err)
	}
}

func TestGatewayRequest(t *testing.T) {
	fake := newFake()
	h := startPlugin(t, t.TempDir(), fake)
	// --gateway: dockerd asks the IPAM driver for it with the gateway
	// request type, and the network is created with it.
	c := h.mustCreateNetwork(dockerNet{id: dockerID(1), subnet: "10.66.0.0/16", gateway: "10.66.255.1", opts: map[string]string{OptNetwork: "gw"}})
	if c.gw.String() != "10.66.255.1/16" {
		t.Errorf("gateway answer %s", c.gw)
	}
	if info, _ := fake.Network("gw"); info.Gateway.String() != "10.66.255.1" {
		t.Errorf("backend gateway %s", info.Gateway)
	}
	// The gateway is the network's, never a container's to reserve or free.
	h.must("IpamDriver.ReleaseAddress", &ipamapi2.ReleaseAddressRequest{PoolID: c.poolID, Address: "10.66.255.1"}, &ipamapi2.ReleaseAddressResponse{})
	err := h.call("IpamDriver.RequestAddress", &ipamapi2.RequestAddressRequest{PoolID: c.poolID, Address: "10.66.255.1"}, &ipamapi2.RequestAddressResponse{})
	if err == nil {
		t.Errorf("the gateway was handed out as a container address")
	}
	var ar ipamapi2.RequestAddressResponse
	h.must("IpamDriver.RequestAddress", &ipamapi2.RequestAddressRequest{PoolID: c.poolID,
		Options: map[string]string{ipamapi.RequestAddressType: netlabel.Gateway}}, &ar)
	if ar.Address != "10.66.255.1/16" {
		t.Errorf("gateway request on a created network: %q", ar.Address)
	}
	// A bad --gateway is refused, naming it.
	_, err = h.createNetwork(dockerNet{id: dockerID(2), subnet: "10.67.0.0/24", gateway: "10.67.0.255"})
	if err == nil || !strings.Contains(err.Error(), "--gateway 10.67.0.255 is the broadcast address") {
		t.Errorf("broadcast gateway: %v", err)
	}
}

func TestDefaultNetworkName(t *testing.T) {
	fake := newFake()
	h := startPlugin(t, t.TempDir(), fake)
	id := "4f2c9a1b7e3d" + strings.Repeat("0", 52)
	h.mustCreateNetwork(dockerNet{id: id})
	if _, err := fake.Network("docker-4f2c9a1b7e3d"); err != nil {
		t.Errorf("default name: %v", err)
	}
	// --ipam-opt alone names a new network too.
	h.mustCreateNetwork(dockerNet{id: dockerID(2), ipamOpts: map[string]string{OptNetwork: "byipam"}})
	if _, err := fake.Network("byipam"); err != nil {
		t.Errorf("--ipam-opt name: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	fake := newFake()
	h := startPlugin(t, t.TempDir(), fake)
	for _, tc := range []struct {
		name string
		do   func() error
		want string
	}{
		{"unknown -o", func() error {
			_, err := h.createNetwork(dockerNet{id: dockerID(1), opts: map[string]string{"netalias.netwrok": "x"}})
			return err
		}, "unknown option -o netalias.netwrok"},
		{"unknown --ipam-opt", func() error {
			_, err := h.createNetwork(dockerNet{id: dockerID(1), ipamOpts: map[string]string{"size": "24"}})
			return err
		}, "unknown --ipam-opt size"},
		{"bad mtu", func() error {
			_, err := h.createNetwork(dockerNet{id: dockerID(1), opts: map[string]string{netlabel.DriverMTU: "9x"}})
			return err
		}, `com.docker.network.driver.mtu="9x"`},
		{"-o and --ipam-opt disagree", func() error {
			_, err := h.createNetwork(dockerNet{id: dockerID(1), ipamOpts: map[string]string{OptNetwork: "a"}, opts: map[string]string{OptNetwork: "b"}})
			return err
		}, "they must agree"},
		{"pool from another IPAM driver", func() error {
			v4 := []driverapi.IPAMData{{AddressSpace: "LocalDefault", Pool: netIPNet(netip.MustParsePrefix("172.30.0.0/16")), Gateway: netIPNet(netip.MustParsePrefix("172.30.0.1/16"))}}
			return h.call("NetworkDriver.CreateNetwork", &api.CreateNetworkRequest{NetworkID: dockerID(1), IPv4Data: v4}, &api.CreateNetworkResponse{})
		}, "create the network with --ipam-driver natest"},
		{"swarm", func() error {
			return h.call("NetworkDriver.AllocateNetwork", &api.AllocateNetworkRequest{NetworkID: dockerID(1)}, &api.AllocateNetworkResponse{})
		}, "swarm (global-scope) networks are not supported"},
		{"--ip-range", func() error {
			return h.call("IpamDriver.RequestPool", &ipamapi2.RequestPoolRequest{Pool: "10.60.0.0/16", SubPool: "10.60.1.0/24"}, &ipamapi2.RequestPoolResponse{})
		}, "--ip-range 10.60.1.0/24 is not supported"},
		{"IPv6 --subnet for IPv4", func() error {
			return h.call("IpamDriver.RequestPool", &ipamapi2.RequestPoolRequest{Pool: "fd00::/64"}, &ipamapi2.RequestPoolResponse{})
		}, "--subnet fd00::/64 is not an IPv4 subnet"},
		{"global address space", func() error {
			return h.call("IpamDriver.RequestPool", &ipamapi2.RequestPoolRequest{AddressSpace: GlobalAddressSpace}, &ipamapi2.RequestPoolResponse{})
		}, "local-scope IPAM driver"},
	} {
		err := tc.do()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	// Nothing was made, and no pool is left held.
	if len(fake.created) != 0 || len(readMap(t, h.dir)) != 0 {
		t.Errorf("refused creates left networks %v / map %v", fake.created, readMap(t, h.dir))
	}
	h.srv.mu.Lock()
	held := len(h.srv.pools)
	h.srv.mu.Unlock()
	if held != 0 {
		t.Errorf("%d pools still held after refused creates", held)
	}

	// --aux-address: dockerd asks for the address before CreateNetwork.
	var pr ipamapi2.RequestPoolResponse
	h.must("IpamDriver.RequestPool", &ipamapi2.RequestPoolRequest{Pool: "10.61.0.0/24"}, &pr)
	err := h.call("IpamDriver.RequestAddress", &ipamapi2.RequestAddressRequest{PoolID: pr.PoolID, Address: "10.61.0.9"}, &ipamapi2.RequestAddressResponse{})
	if err == nil || !strings.Contains(err.Error(), "auxiliary addresses (--aux-address 10.61.0.9) are not supported") {
		t.Errorf("--aux-address: %v", err)
	}
	h.must("IpamDriver.ReleasePool", &ipamapi2.ReleasePoolRequest{PoolID: pr.PoolID}, &ipamapi2.ReleasePoolResponse{})

	// Published ports are refused rather than silently not published.
	c := h.mustCreateNetwork(dockerNet{id: dockerID(9), opts: map[string]string{OptNetwork: "ports"}})
	_ = c
	pm := []any{map[string]any{"Proto": 6, "Port": 80, "HostPort": 8080}}
	err = h.call("NetworkDriver.ProgramExternalConnectivity", &api.ProgramExternalConnectivityRequest{NetworkID: dockerID(9), EndpointID: dockerID(10),
		Options: map[string]any{netlabel.PortMap: pm}}, &api.ProgramExternalConnectivityResponse{})
	if err == nil || !strings.Contains(err.Error(), `netalias network "ports": publishing ports`) {
		t.Errorf("-p: %v", err)
	}
}

func TestBackendFailureLeavesNothing(t *testing.T) {
	fake := newFake()
	dir := t.TempDir()
	h := startPlugin(t, dir, fake)
	fake.fail, fake.failOnly = errors.New("bridge na-123 busy"), "CreateNetwork"
	_, err := h.createNetwork(dockerNet{id: dockerID(1), opts: map[string]string{OptNetwork: "boom"}})
	if err == nil || !strings.Contains(err.Error(), `creating netalias network "boom": bridge na-123 busy`) {
		t.Fatalf("backend failure: %v", err)
	}
	if m := readMap(t, dir); len(m) != 0 {
		t.Errorf("map keeps a network that failed: %v", m)
	}
	// The same create succeeds when retried: no pool was left held.
	h.mustCreateNetwork(dockerNet{id: dockerID(1), opts: map[string]string{OptNetwork: "boom"}})

	// A removal the backend refuses keeps the map entry, so a retry works.
	fake.fail, fake.failOnly = errors.New("network has endpoints"), "RemoveNetwork"
	err = h.call("NetworkDriver.DeleteNetwork", &api.DeleteNetworkRequest{NetworkID: dockerID(1)}, &api.DeleteNetworkResponse{})
	if err == nil || !strings.Contains(err.Error(), `removing netalias network "boom": network has endpoints`) {
		t.Fatalf("refused removal: %v", err)
	}
	if m := readMap(t, dir)[dockerID(1)]; m == nil {
		t.Fatalf("map entry dropped though the network remains")
	}
	h.must("NetworkDriver.DeleteNetwork", &api.DeleteNetworkRequest{NetworkID: dockerID(1)}, &api.DeleteNetworkResponse{})
	if _, err := fake.Network("boom"); !errors.Is(err, ErrNotFound) {
		t.Errorf("retry did not remove: %v", err)
	}
}

func TestCorruptMapRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	p := MapPath(dir, "natest")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(`{"version":1,"networks":{"abc":`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{Name: "natest", Socket: filepath.Join(dir, "s.sock"), StateDir: dir, Backend: newFake()})
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt map: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != `{"version":1,"networks":{"abc":` {
		t.Errorf("corrupt map was rewritten: %s", b)
	}
}

func TestSocketInUse(t *testing.T) {
	h := startPlugin(t, t.TempDir(), newFake())
	s2, err := New(Config{Name: "natest", Socket: h.sock, StateDir: t.TempDir(), Backend: newFake()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Listen(); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second plugin on a live socket: %v", err)
	}
	// The first still answers.
	var caps api.GetCapabilityResponse
	h.must("NetworkDriver.GetCapabilities", nil, &caps)
	// A stale socket file (dead plugin) is replaced.
	h.stop()
	ln, err := net.Listen("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := s2.Listen(); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	s2.Close()
}

// TestWireFormat feeds the JSON dockerd 20.10 sends for a network create
// (as captured from its plugin client) and checks the answers decode into
// the v28.5.2 response types.
func TestWireFormat(t *testing.T) {
	fake := newFake()
	h := startPlugin(t, t.TempDir(), fake)
	status, _, body := h.raw("IpamDriver.RequestPool", `{"AddressSpace":"netalias","Pool":"10.55.0.0/24","SubPool":"","Options":{},"V6":false}`)
	var pr ipamapi2.RequestPoolResponse
	if err := json.Unmarshal(body, &pr); err != nil || status != 200 || pr.PoolID == "" || pr.Pool != "10.55.0.0/24" || pr.Data["com.docker.network.gateway"] != "10.55.0.1/24" {
		t.Fatalf("RequestPool: %d %s", status, body)
	}
	id := dockerID(5)
	status, _, body = h.raw("NetworkDriver.CreateNetwork", `{"NetworkID":"`+id+`","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"netalias.network":"wire"}},"IPv4Data":[{"AddressSpace":"netalias","Gateway":"10.55.0.1/24","Pool":"10.55.0.0/24"}],"IPv6Data":[]}`)
	if status != 200 || strings.TrimSpace(string(body)) != `{"Err":""}` {
		t.Fatalf("CreateNetwork: %d %s", status, body)
	}
	status, _, body = h.raw("IpamDriver.RequestAddress", `{"PoolID":"`+pr.PoolID+`","Address":"","Options":{}}`)
	var ar ipamapi2.RequestAddressResponse
	if err := json.Unmarshal(body, &ar); err != nil || status != 200 || ar.Address != "10.55.0.2/24" {
		t.Fatalf("RequestAddress: %d %s", status, body)
	}
	status, _, body = h.raw("NetworkDriver.CreateEndpoint", `{"NetworkID":"`+id+`","EndpointID":"`+dockerID(6)+`","Interface":{"Address":"10.55.0.2/24","AddressIPv6":"","MacAddress":""},"Options":{"com.docker.network.endpoint.exposedports":[],"com.docker.network.portmap":[]}}`)
	var cr api.CreateEndpointResponse
	if err := json.Unmarshal(body, &cr); err != nil || status != 200 || cr.Interface == nil || cr.Interface.Address != "" || cr.Interface.MacAddress == "" {
		t.Fatalf("CreateEndpoint: %d %s", status, body)
	}
	status, _, body = h.raw("NetworkDriver.Join", `{"NetworkID":"`+id+`","EndpointID":"`+dockerID(6)+`","SandboxKey":"/var/run/docker/netns/0123456789ab","Options":{}}`)
	var jr api.JoinResponse
	if err := json.Unmarshal(body, &jr); err != nil || status != 200 || jr.Gateway != "10.55.0.1" || jr.InterfaceName.DstPrefix != "eth" {
		t.Fatalf("Join: %d %s", status, body)
	}
	// dockerd sends "null" for methods without arguments.
	if status, _, body = h.raw("NetworkDriver.GetCapabilities", "null"); status != 200 || !bytes.Contains(body, []byte(`"Scope":"local"`)) {
		t.Errorf("GetCapabilities: %d %s", status, body)
	}
}

// A pool whose network create died midway is forgotten after a while, so
// its subnet does not stay blocked until the plugin restarts.
func TestAbandonedPoolExpires(t *testing.T) {
	h := startPlugin(t, t.TempDir(), newFake())
	var pr ipamapi2.RequestPoolResponse
	h.must("IpamDriver.RequestPool", &ipamapi2.RequestPoolRequest{Pool: "10.62.0.0/24"}, &pr)
	// dockerd died here: no CreateNetwork, no ReleasePool.
	err := h.call("IpamDriver.RequestPool", &ipamapi2.RequestPoolRequest{Pool: "10.62.0.0/24"}, &ipamapi2.RequestPoolResponse{})
	if err == nil || !strings.Contains(err.Error(), "another Docker network being created") {
		t.Fatalf("pool held by a create in flight: %v", err)
	}
	h.srv.mu.Lock()
	h.srv.pools[pr.PoolID].since = time.Now().Add(-pendingTTL - time.Second)
	h.srv.mu.Unlock()
	h.mustCreateNetwork(dockerNet{id: dockerID(1), subnet: "10.62.0.0/24"})
}

// BenchmarkContainerProtocol measures the protocol's own cost of one
// container (dockerd's six calls over the unix socket, in-memory backend):
// what the driver adds to `docker run` + `docker rm` before any kernel work.
func BenchmarkContainerProtocol(b *testing.B) {
	fake := newFake()
	dir := b.TempDir()
	srv, err := New(Config{Name: "natest", Socket: filepath.Join(dir, "b.sock"), StateDir: dir, Backend: fake,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	cl, err := plugins.NewClientWithTimeout("unix://"+filepath.Join(dir, "b.sock"), &tlsconfig.Options{InsecureSkipVerify: true}, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	call := func(m string, req, resp any) {
		if err := cl.Call(m, req, resp); err != nil {
			b.Fatalf("%s: %v", m, err)
		}
	}
	var pr ipamapi2.RequestPoolResponse
	call("IpamDriver.RequestPool", &ipamapi2.RequestPoolRequest{Pool: "10.63.0.0/16"}, &pr)
	netID := dockerID(1)
	v4 := []driverapi.IPAMData{{AddressSpace: LocalAddressSpace, Pool: netIPNet(netip.MustParsePrefix("10.63.0.0/16")), Gateway: netIPNet(netip.MustParsePrefix("10.63.0.1/16"))}}
	call("NetworkDriver.CreateNetwork", &api.CreateNetworkRequest{NetworkID: netID, IPv4Data: v4}, &api.CreateNetworkResponse{})
	b.ResetTimer()
	for i := range b.N {
		ep := fmt.Sprintf("%064x", i)
		var ar ipamapi2.RequestAddressResponse
		call("IpamDriver.RequestAddress", &ipamapi2.RequestAddressRequest{PoolID: pr.PoolID}, &ar)
		call("NetworkDriver.CreateEndpoint", &api.CreateEndpointRequest{NetworkID: netID, EndpointID: ep, Interface: &api.EndpointInterface{Address: ar.Address}}, &api.CreateEndpointResponse{})
		call("NetworkDriver.Join", &api.JoinRequest{NetworkID: netID, EndpointID: ep}, &api.JoinResponse{})
		call("NetworkDriver.Leave", &api.LeaveRequest{NetworkID: netID, EndpointID: ep}, &api.LeaveResponse{})
		call("NetworkDriver.DeleteEndpoint", &api.DeleteEndpointRequest{NetworkID: netID, EndpointID: ep}, &api.DeleteEndpointResponse{})
		a, _ := netip.ParsePrefix(ar.Address)
		call("IpamDriver.ReleaseAddress", &ipamapi2.ReleaseAddressRequest{PoolID: pr.PoolID, Address: a.Addr().String()}, &ipamapi2.ReleaseAddressResponse{})
	}
}

func TestSocketPathNotASocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "natest.sock")
	if err := os.WriteFile(p, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Name: "natest", Socket: p, StateDir: t.TempDir(), Backend: newFake()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "keep" {
		t.Errorf("the file was replaced")
	}
}
