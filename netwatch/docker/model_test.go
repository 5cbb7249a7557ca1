package docker

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/netalias/netalias/netwatch"
)

// Inspect outputs trimmed from Docker Engine 20.10 and Podman 4.3's
// compat API, as the source receives them.
const (
	dockerC1 = `{"Id":"42c25ec482045a11c7edc9b0d15d3756ff17874aed6dd5ce46610d8dbabfe609","Name":"/centos-1",
	 "State":{"Status":"running","Running":true},"HostConfig":{"Links":null},
	 "Config":{"Labels":{"com.docker.compose.service":"web"}},
	 "NetworkSettings":{"Networks":{"testnet":{"Links":null,"Aliases":["c1","42c25ec48204"],
	  "Gateway":"172.20.0.1","IPAddress":"172.20.0.2","IPPrefixLen":16,"GlobalIPv6Address":"fd00:20::2"}}}}`
	dockerC2 = `{"Id":"08af164a68ab70c58203b149c819312fe75b8c53f9287ffde7955613a38274f5","Name":"/centos-2",
	 "State":{"Status":"running","Running":true},"HostConfig":{"Links":null},"Config":{"Labels":{}},
	 "NetworkSettings":{"Networks":{"testnet":{"Links":["centos-1:db"],"Aliases":["08af164a68ab"],
	  "Gateway":"172.20.0.1","IPAddress":"172.20.0.3","IPPrefixLen":16}}}}`
	dockerBridgeLinker = `{"Id":"3f4e7c13fbc2b19fb39ef3dd0c00cff89a760d256527556798cf422fba635d10","Name":"/c3",
	 "State":{"Status":"running","Running":true},"HostConfig":{"Links":["/c4:/c3/db2"]},"Config":{},
	 "NetworkSettings":{"Networks":{"bridge":{"Links":null,"Aliases":null,
	  "Gateway":"172.17.0.1","IPAddress":"172.17.0.3","IPPrefixLen":16}}}}`
	dockerStopped = `{"Id":"aaaa","Name":"/gone","State":{"Status":"exited","Running":false},
	 "NetworkSettings":{"Networks":{"testnet":{"IPAddress":""}}}}`
	podmanP1 = `{"Id":"5e82890a8ba84a27b63d8b3f70b123fb710237b20283152bab7fd7693ffa3019","Name":"/natest-p1",
	 "State":{"Status":"running","Running":true},"HostConfig":{"Links":null},"Config":{"Labels":{}},
	 "NetworkSettings":{"Networks":{"podman":{"Links":null,"Aliases":["C1","5e82890a8ba8"],"NetworkID":"podman",
	  "Gateway":"10.88.0.1","IPAddress":"10.88.0.2","IPPrefixLen":16}}}}`
	hostNet = `{"Id":"bbbb","Name":"/onhost","State":{"Running":true},
	 "NetworkSettings":{"Networks":{"host":{"IPAddress":""}}}}`
)

func inspect(t *testing.T, s string) container.InspectResponse {
	t.Helper()
	var c container.InspectResponse
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFromInspect(t *testing.T) {
	c := fromInspect(inspect(t, dockerC1))
	want := &ctr{
		id:   "42c25ec482045a11c7edc9b0d15d3756ff17874aed6dd5ce46610d8dbabfe609",
		name: "centos-1",
		endpoints: map[string]endpoint{"testnet": {
			aliases: []string{"42c25ec48204", "c1", "web"},
			ipv4:    netip.MustParseAddr("172.20.0.2"),
			ipv6:    netip.MustParseAddr("fd00:20::2"),
			gateway: netip.MustParseAddr("172.20.0.1"),
		}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("docker container:\n got %+v\nwant %+v", c, want)
	}

	// Podman repeats the short id among the aliases and may keep case.
	p := fromInspect(inspect(t, podmanP1))
	if got := p.endpoints["podman"].aliases; !reflect.DeepEqual(got, []string{"5e82890a8ba8", "c1"}) {
		t.Errorf("podman aliases = %v", got)
	}

	for name, s := range map[string]string{"stopped": dockerStopped} {
		if x := fromInspect(inspect(t, s)); x != nil {
			t.Errorf("%s container yields records: %+v", name, x)
		}
	}
	if x := fromInspect(inspect(t, hostNet)); x == nil || len(x.endpoints) != 0 {
		t.Errorf("host-network container: want no endpoints, got %+v", x)
	}
}

func TestLinks(t *testing.T) {
	// User-defined network: per-endpoint "target:alias".
	c2 := fromInspect(inspect(t, dockerC2))
	if got, want := c2.endpoints["testnet"].links, []netwatch.Link{{Target: "centos-1", Alias: "db"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("endpoint links = %v, want %v", got, want)
	}
	// Default bridge: HostConfig "/target:/linker/alias".
	c3 := fromInspect(inspect(t, dockerBridgeLinker))
	if got, want := c3.endpoints["bridge"].links, []netwatch.Link{{Target: "c4", Alias: "db2"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("host config links = %v, want %v", got, want)
	}
	if got, want := parseLinks([]string{"centos-1", "", ":x", "/a:/b/c"}), []netwatch.Link{{Target: "centos-1", Alias: "centos-1"}, {Target: "a", Alias: "c"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("parseLinks = %v, want %v", got, want)
	}
}

func TestModelTouchesOnlyChangedNetworks(t *testing.T) {
	m := newModel()
	c1 := fromInspect(inspect(t, dockerC1))
	if got := m.set(c1.id, c1); !reflect.DeepEqual(got, []string{"testnet"}) {
		t.Errorf("first set touched %v", got)
	}
	// The same state again (a replayed or redundant event) publishes nothing.
	if got := m.set(c1.id, fromInspect(inspect(t, dockerC1))); got != nil {
		t.Errorf("unchanged set touched %v", got)
	}
	b := fromInspect(inspect(t, dockerBridgeLinker))
	if got := m.set(b.id, b); !reflect.DeepEqual(got, []string{"bridge"}) {
		t.Errorf("bridge container touched %v", got)
	}
	// Moving a container from one network to another touches both.
	moved := *c1
	moved.endpoints = map[string]endpoint{"other": c1.endpoints["testnet"]}
	if got := m.set(c1.id, &moved); !reflect.DeepEqual(got, []string{"other", "testnet"}) {
		t.Errorf("move touched %v", got)
	}
	if got := m.set(c1.id, nil); !reflect.DeepEqual(got, []string{"other"}) {
		t.Errorf("removal touched %v", got)
	}
	if got := m.set("never-seen", nil); got != nil {
		t.Errorf("removing an unknown container touched %v", got)
	}
	if n := m.network("testnet"); n != nil {
		t.Errorf("empty network still has a record: %+v", n)
	}
}

func TestNetworkRecord(t *testing.T) {
	m := newModel()
	for _, s := range []string{dockerC1, dockerC2, dockerBridgeLinker} {
		c := fromInspect(inspect(t, s))
		m.set(c.id, c)
	}
	// Two replicas of one Compose service: the service alias is on both.
	rep := fromInspect(inspect(t, dockerC1))
	rep.id, rep.name = "ffff00000000aaaa", "proj-web-2"
	ep := rep.endpoints["testnet"]
	ep.ipv4, ep.ipv6 = netip.MustParseAddr("172.20.0.9"), netip.Addr{}
	ep.aliases = []string{"ffff00000000", "web"}
	rep.endpoints["testnet"] = ep
	m.set(rep.id, rep)

	var ni network.Inspect
	if err := json.Unmarshal([]byte(`{"Name":"testnet","IPAM":{"Config":[{"Subnet":"172.20.0.0/16","Gateway":"172.20.0.1"},{"Subnet":"fd00:20::/64"}]}}`), &ni); err != nil {
		t.Fatal(err)
	}
	m.nets["testnet"] = netInfoFrom(ni)

	n := m.network("testnet")
	if n.Subnet != netip.MustParsePrefix("172.20.0.0/16") || n.Subnet6 != netip.MustParsePrefix("fd00:20::/64") || n.Gateway != netip.MustParseAddr("172.20.0.1") {
		t.Errorf("network fields: %+v", n)
	}
	var names []string
	withWeb := 0
	for _, e := range n.Endpoints {
		names = append(names, e.Name)
		for _, a := range e.Aliases {
			if a == "web" {
				withWeb++
			}
		}
	}
	if want := []string{"centos-1", "centos-2", "proj-web-2"}; !reflect.DeepEqual(names, want) {
		t.Errorf("endpoints %v, want %v (sorted)", names, want)
	}
	if withWeb != 2 {
		t.Errorf("service alias on %d endpoints, want both replicas", withWeb)
	}
	if e := n.Endpoints[1]; e.Container != "08af164a68ab70c58203b149c819312fe75b8c53f9287ffde7955613a38274f5" || len(e.Links) != 1 {
		t.Errorf("centos-2 endpoint: %+v", e)
	}

	// The default bridge has no IPAM gateway in Docker: taken from endpoints.
	if b := m.network("bridge"); b.Gateway != netip.MustParseAddr("172.17.0.1") || len(b.Endpoints) != 1 || b.Endpoints[0].Name != "c3" {
		t.Errorf("bridge record: %+v", b)
	}

	// Records handed to the sink are not aliased to the model.
	n.Endpoints[0].Aliases[0] = "mutated"
	if m.network("testnet").Endpoints[0].Aliases[0] == "mutated" {
		t.Error("published record shares memory with the model")
	}
	if got := m.all(); len(got) != 2 || got[0].Name != "bridge" || got[1].Name != "testnet" || !m.published["testnet"] {
		t.Errorf("all() = %v", got)
	}
}

func TestNewEndpoint(t *testing.T) {
	s, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != "docker:unix:///var/run/docker.sock" {
		t.Errorf("default name %q", s.Name())
	}
	for _, bad := range []string{"tcp://1.2.3.4:2375", "/var/run/docker.sock", "unix://", "unix://relative.sock", "unix:///"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

// A network the engine has stays published without containers (its names
// are then NXDOMAIN, not someone else's), and goes once the engine drops it.
func TestKnownEmptyNetwork(t *testing.T) {
	m := newModel()
	m.nets["empty"] = netInfo{subnet: netip.MustParsePrefix("10.203.9.0/24")}
	n := m.network("empty")
	if n == nil || len(n.Endpoints) != 0 || n.Subnet != netip.MustParsePrefix("10.203.9.0/24") {
		t.Fatalf("known empty network: %+v", n)
	}
	if all := m.all(); len(all) != 1 || all[0].Name != "empty" {
		t.Errorf("all() = %v", all)
	}
	delete(m.nets, "empty")
	if n := m.network("empty"); n != nil {
		t.Errorf("dropped network still has a record: %+v", n)
	}
	// A container on a network the listing did not show still publishes it.
	c := fromInspect(inspect(t, dockerC1))
	m.set(c.id, c)
	if n := m.network("testnet"); n == nil || len(n.Endpoints) != 1 {
		t.Errorf("unlisted network with a container: %+v", n)
	}
}

// State.Health as Docker 20.10 and Podman 4.3 inspect it; no Health (no
// healthcheck) and an unknown status count as none, which is ready.
func TestFromInspectHealth(t *testing.T) {
	base := `{"Id":"cccc","Name":"/h","State":{"Running":true%s},"Config":{},
	 "NetworkSettings":{"Networks":{"n":{"IPAddress":"10.9.0.2"}}}}`
	for health, want := range map[string]netwatch.Health{
		``: netwatch.HealthNone,
		`,"Health":{"Status":"starting","FailingStreak":0,"Log":[]}`:                            netwatch.HealthStarting,
		`,"Health":{"Status":"healthy","FailingStreak":0,"Log":[{"ExitCode":0,"Output":""}]}`:   netwatch.HealthHealthy,
		`,"Health":{"Status":"unhealthy","FailingStreak":1,"Log":[{"ExitCode":1,"Output":""}]}`: netwatch.HealthUnhealthy,
		`,"Health":{"Status":"starting","FailingStreak":0,"Log":null}`:                          netwatch.HealthStarting, // Podman
		`,"Health":{"Status":"none"}`:                                                           netwatch.HealthNone,
		`,"Health":{"Status":"bewildered"}`:                                                     netwatch.HealthNone,
	} {
		c := fromInspect(inspect(t, fmt.Sprintf(base, health)))
		if c == nil || c.health != want {
			t.Errorf("Health %s: got %+v, want %v", health, c, want)
			continue
		}
		m := newModel()
		m.set(c.id, c)
		if got := m.network("n").Endpoints[0].Health; got != want {
			t.Errorf("Health %s: published %v, want %v", health, got, want)
		}
	}
}

// A health change touches the container's networks; the same status
// again touches nothing; an unknown container is not known.
func TestModelSetHealth(t *testing.T) {
	m := newModel()
	c := fromInspect(inspect(t, dockerC1))
	m.set(c.id, c)
	if touched, known := m.setHealth(c.id, netwatch.HealthUnhealthy); !known || len(touched) != 1 || touched[0] != "testnet" {
		t.Fatalf("setHealth: touched %v known %v", touched, known)
	}
	if m.network("testnet").Endpoints[0].Health != netwatch.HealthUnhealthy {
		t.Fatal("health not published")
	}
	if touched, _ := m.setHealth(c.id, netwatch.HealthUnhealthy); touched != nil {
		t.Errorf("same status touched %v", touched)
	}
	if _, known := m.setHealth("nope", netwatch.HealthHealthy); known {
		t.Error("unknown container known")
	}
	// A disconnect keeps the health.
	m.disconnect(c.id, "other")
	if m.containers[c.id].health != netwatch.HealthUnhealthy {
		t.Error("health lost")
	}
}
