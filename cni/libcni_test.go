package cni

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// TestLifecycleEveryVersion runs ADD, CHECK, DEL, DEL through libcni at
// each spec version the plugin speaks, and reads each Result back with
// the library's own type for that version (Podman 4.3 reads 1.0.0, older
// runtimes 0.4.0 and 0.3.x).
func TestLifecycleEveryVersion(t *testing.T) {
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			e := newEnv(t, map[string]*fakeNet{"testnet": {Subnet: "10.88.7.0/24", Subnet6: "fd00:88:7::/64", MTU: 1400}})
			list := e.list(ConflistOptions{CNIVersion: v})
			ns := e.netns("ns1")
			rt := e.rt("4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a99", "eth0", ns, [2]string{"K8S_POD_NAME", "centos-1"})
			res, err := e.lib.AddNetworkList(ctx, list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Errorf("Result version %s, want %s", res.Version(), v)
			}
			// What the runtime reads, in the version's own type.
			type iface struct{ name, mac, sandbox string }
			var ifs []iface
			var ips, gws, routes []string
			var ipIfc []int
			var dns types.DNS
			if v >= "1.0.0" {
				r, err := types100.GetResult(res)
				if err != nil {
					t.Fatal(err)
				}
				for _, i := range r.Interfaces {
					ifs = append(ifs, iface{i.Name, i.Mac, i.Sandbox})
				}
				if r.Interfaces[1].Mtu != 1400 {
					t.Errorf("container interface MTU %d, want 1400", r.Interfaces[1].Mtu)
				}
				for _, ip := range r.IPs {
					ips, gws, ipIfc = append(ips, ip.Address.String()), append(gws, ip.Gateway.String()), append(ipIfc, *ip.Interface)
				}
				for _, rt := range r.Routes {
					routes = append(routes, rt.Dst.String()+" via "+rt.GW.String())
				}
				dns = r.DNS
			} else {
				r, err := types040.GetResult(res)
				if err != nil {
					t.Fatal(err)
				}
				for _, i := range r.Interfaces {
					ifs = append(ifs, iface{i.Name, i.Mac, i.Sandbox})
				}
				for _, ip := range r.IPs {
					ips, gws, ipIfc = append(ips, ip.Address.String()), append(gws, ip.Gateway.String()), append(ipIfc, *ip.Interface)
				}
				for _, rt := range r.Routes {
					routes = append(routes, rt.Dst.String()+" via "+rt.GW.String())
				}
				dns = r.DNS
			}
			if len(ifs) != 2 || !strings.HasPrefix(ifs[0].name, "nav") || ifs[0].sandbox != "" || ifs[0].mac == "" ||
				ifs[1] != (iface{"eth0", "02:42:0a:58:07:02", ns}) {
				t.Errorf("interfaces = %+v, want the host veth (no sandbox) then eth0 in %s", ifs, ns)
			}
			if want := []string{"10.88.7.2/24", "fd00:88:7::2/64"}; !slices.Equal(ips, want) {
				t.Errorf("ips = %v, want %v", ips, want)
			}
			if want := []string{"10.88.7.1", "fd00:88:7::1"}; !slices.Equal(gws, want) {
				t.Errorf("gateways = %v, want %v", gws, want)
			}
			if !slices.Equal(ipIfc, []int{1, 1}) {
				t.Errorf("ips[].interface = %v, want [1 1] (the container interface)", ipIfc)
			}
			if want := []string{"0.0.0.0/0 via 10.88.7.1", "::/0 via fd00:88:7::1"}; !slices.Equal(routes, want) {
				t.Errorf("routes = %v, want %v", routes, want)
			}
			if !slices.Equal(dns.Nameservers, []string{"10.88.7.1"}) || !slices.Equal(dns.Search, []string{"testnet"}) || dns.Domain != "" {
				t.Errorf("dns = %+v, want nameserver 10.88.7.1, search testnet", dns)
			}
			req := e.lastAdd()
			if req.Name != "centos-1" || req.Network != "testnet" || req.CNINetwork != "testnet" || req.Netns != ns ||
				req.Key != (Key{rt.ContainerID, "eth0"}) {
				t.Errorf("backend got %+v", req)
			}

			if v >= "0.4.0" {
				if err := e.lib.CheckNetworkList(ctx, list, rt); err != nil {
					t.Errorf("CHECK right after ADD: %v", err)
				}
			}
			for i := range 2 {
				if err := e.lib.DelNetworkList(ctx, list, rt); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			if n := len(e.state().Networks["testnet"].Attachments); n != 0 {
				t.Errorf("%d attachments left after DEL", n)
			}
		})
	}
}

func TestInternalNetworkHasNoDefaultRoute(t *testing.T) {
	e := newEnv(t, map[string]*fakeNet{"testnet": {Subnet: "10.88.7.0/24", Internal: true}})
	res, err := e.lib.AddNetworkList(ctx, e.list(ConflistOptions{}), e.rt("c1", "eth0", e.netns("ns")))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := types100.GetResult(res)
	if len(r.Routes) != 0 {
		t.Errorf("routes %v on an internal network, want none", r.Routes)
	}
	if len(r.IPs) != 1 || r.IPs[0].Gateway.String() != "10.88.7.1" {
		t.Errorf("ips %v: the gateway is still reported", r.IPs)
	}
}

// TestNames covers how the endpoint name and aliases are chosen: bad
// names are skipped with a warning on stderr, never a failed ADD.
func TestNames(t *testing.T) {
	const id = "ABCDEF0123456789abcdef"
	cases := []struct {
		name     string
		podName  string
		aliases  any
		wantName string
		wantAls  []string
		warns    []string
	}{
		{name: "pod name", podName: "centos-1", wantName: "centos-1"},
		{name: "no pod name", wantName: "abcdef012345"},
		{name: "pod name with underscore", podName: "my_app", wantName: "abcdef012345", warns: []string{`K8S_POD_NAME "my_app"`}},
		{name: "pod name with dot", podName: "a.b", wantName: "abcdef012345", warns: []string{`K8S_POD_NAME "a.b"`}},
		{name: "alias list", podName: "web", aliases: []string{"db", "db.local", "Web", "bad_alias", "db", "-x"},
			wantName: "web", wantAls: []string{"db", "db.local"}, warns: []string{`alias "bad_alias"`, `alias "-x"`}},
		{name: "podman map by CNI name", podName: "web", aliases: map[string][]string{"podnet": {"api"}, "other": {"no"}},
			wantName: "web", wantAls: []string{"api"}},
		{name: "podman map by network", podName: "web", aliases: map[string][]string{"testnet": {"api2"}},
			wantName: "web", wantAls: []string{"api2"}},
		{name: "podman map for another network", podName: "web", aliases: map[string][]string{"other": {"x"}},
			wantName: "web"},
		{name: "aliases of the wrong shape", podName: "web", aliases: 42, wantName: "web", warns: []string{"runtimeConfig.aliases"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, testnet())
			list := e.list(ConflistOptions{Name: "podnet"})
			rt := e.rt(id, "eth0", e.netns("ns"), [2]string{"IgnoreUnknown", "1"}, [2]string{"K8S_POD_NAMESPACE", "default"})
			if c.podName != "" {
				rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", c.podName})
			}
			if c.aliases != nil {
				rt.CapabilityArgs["aliases"] = c.aliases
			}
			if _, err := e.lib.AddNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("ADD failed: %v", err)
			}
			req := e.lastAdd()
			if req.Name != c.wantName || !slices.Equal(req.Aliases, c.wantAls) {
				t.Errorf("name %q aliases %q, want %q %q", req.Name, req.Aliases, c.wantName, c.wantAls)
			}
			stderr := e.stderr.String()
			for _, w := range c.warns {
				if !strings.Contains(stderr, "netalias: warning: ") || !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks a warning about %s", stderr, w)
				}
			}
			if len(c.warns) == 0 && stderr != "" {
				t.Errorf("unexpected stderr %q", stderr)
			}
		})
	}
}

func TestNameTakenFallsBackToShortID(t *testing.T) {
	nets := testnet()
	nets["testnet"].Taken = []string{"web"}
	e := newEnv(t, nets)
	rt := e.rt("0123456789abcdef", "eth0", e.netns("ns"), [2]string{"K8S_POD_NAME", "web"})
	if _, err := e.lib.AddNetworkList(ctx, e.list(ConflistOptions{}), rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if got := e.state().Networks["testnet"].Attachments[0].Name; got != "0123456789ab" {
		t.Errorf("recorded name %q, want the short ID", got)
	}
	if !strings.Contains(e.stderr.String(), `"web" is taken`) {
		t.Errorf("no warning on stderr: %q", e.stderr.String())
	}
}

func TestStaticAddressAndMAC(t *testing.T) {
	cases := []struct {
		name    string
		args    [][2]string
		caps    map[string]any
		wantIP  string
		wantIP6 string
		wantMAC string
	}{
		{name: "IP and MAC args (Podman, one address)", args: [][2]string{{"IP", "10.88.7.50"}, {"MAC", "aa:bb:cc:00:11:22"}},
			wantIP: "10.88.7.50/24", wantMAC: "aa:bb:cc:00:11:22"},
		{name: "ips capability with prefixes", caps: map[string]any{"ips": []string{"10.88.7.60/24", "fd00:88:7::60/64"}},
			wantIP: "10.88.7.60/24", wantIP6: "fd00:88:7::60/64", wantMAC: "02:42:0a:58:07:3c"},
		{name: "ips capability bare (Podman, two addresses)", caps: map[string]any{"ips": []string{"fd00:88:7::61", "10.88.7.61"}},
			wantIP: "10.88.7.61/24", wantIP6: "fd00:88:7::61/64", wantMAC: "02:42:0a:58:07:3d"},
		{name: "capability wins over args", args: [][2]string{{"IP", "10.88.7.70"}, {"MAC", "aa:bb:cc:00:11:22"}},
			caps: map[string]any{"ips": []string{"10.88.7.71"}, "mac": "aa:bb:cc:00:11:33"}, wantIP: "10.88.7.71/24", wantMAC: "aa:bb:cc:00:11:33"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, map[string]*fakeNet{"testnet": {Subnet: "10.88.7.0/24", Subnet6: "fd00:88:7::/64"}})
			rt := e.rt("c1", "eth0", e.netns("ns"), c.args...)
			for k, v := range c.caps {
				rt.CapabilityArgs[k] = v
			}
			res, err := e.lib.AddNetworkList(ctx, e.list(ConflistOptions{}), rt)
			if err != nil {
				t.Fatal(err)
			}
			r, _ := types100.GetResult(res)
			var got []string
			for _, ip := range r.IPs {
				got = append(got, ip.Address.String())
			}
			want := []string{c.wantIP, c.wantIP6}
			if c.wantIP6 == "" {
				want = []string{c.wantIP, "fd00:88:7::2/64"}
			}
			if !slices.Equal(got, want) || r.Interfaces[1].Mac != c.wantMAC {
				t.Errorf("ips %v mac %s, want %v %s", got, r.Interfaces[1].Mac, want, c.wantMAC)
			}
		})
	}
}

func TestAddFailures(t *testing.T) {
	cases := []struct {
		name string
		net  fakeNet
		rt   func(*cniEnv) *libcni.RuntimeConf
		code uint
		says string
	}{
		{"no free address", fakeNet{Subnet: "10.88.7.0/24", Status: "full"}, nil, CodeNoFreeAddress, "no free address"},
		{"static address taken", fakeNet{Subnet: "10.88.7.0/24", Attachments: []fakeAtt{{Key: Key{"x", "eth0"}, Name: "x", IPv4: "10.88.7.9"}}},
			func(e *cniEnv) *libcni.RuntimeConf {
				return e.rt("c1", "eth0", e.netns("ns"), [2]string{"IP", "10.88.7.9"})
			}, CodeAddressInUse, "10.88.7.9"},
		{"static address outside", fakeNet{Subnet: "10.88.7.0/24"},
			func(e *cniEnv) *libcni.RuntimeConf {
				return e.rt("c1", "eth0", e.netns("ns"), [2]string{"IP", "10.99.0.9"})
			}, 7, "outside"},
		{"IPv6 on a v4 network", fakeNet{Subnet: "10.88.7.0/24"},
			func(e *cniEnv) *libcni.RuntimeConf {
				return e.rt("c1", "eth0", e.netns("ns"), [2]string{"IP", "fd00::9"})
			}, 7, "no IPv6 subnet"},
		{"state directory read-only", fakeNet{Subnet: "10.88.7.0/24", Status: "io"}, nil, 5, "read-only"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := c.net
			e := newEnv(t, map[string]*fakeNet{"testnet": &n})
			rt := e.rt("c1", "eth0", e.netns("ns"))
			if c.rt != nil {
				rt = c.rt(e)
			}
			_, err := e.lib.AddNetworkList(ctx, e.list(ConflistOptions{}), rt)
			if codeOf(err) != c.code || !strings.Contains(err.Error(), c.says) {
				t.Errorf("ADD: %v (code %d), want code %d mentioning %q", err, codeOf(err), c.code, c.says)
			}
		})
	}
}

// TestSecondInterfaceSameContainer: attachments are keyed by container
// and interface, so eth1 beside eth0 is legal; the same pair twice is not.
func TestSecondInterfaceSameContainer(t *testing.T) {
	e := newEnv(t, testnet())
	ns := e.netns("ns")
	list := e.list(ConflistOptions{})
	if _, err := e.lib.AddNetworkList(ctx, list, e.rt("c1", "eth0", ns)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.lib.AddNetworkList(ctx, list, e.rt("c1", "eth1", ns, [2]string{"K8S_POD_NAME", "c1-second"})); err != nil {
		t.Fatalf("second interface: %v", err)
	}
	_, err := e.newLib().AddNetworkList(ctx, list, e.rt("c1", "eth0", ns, [2]string{"K8S_POD_NAME", "again"}))
	if codeOf(err) != CodeExists {
		t.Errorf("same container and interface again: %v (code %d), want %d", err, codeOf(err), CodeExists)
	}
	if n := len(e.state().Networks["testnet"].Attachments); n != 2 {
		t.Errorf("%d attachments, want 2", n)
	}
}

func TestDelIsIdempotent(t *testing.T) {
	e := newEnv(t, testnet())
	list := e.list(ConflistOptions{})
	ns := e.netns("ns")
	if _, err := e.lib.AddNetworkList(ctx, list, e.rt("c1", "eth0", ns)); err != nil {
		t.Fatal(err)
	}
	// Namespace already gone: the runtime sends an empty CNI_NETNS.
	if err := e.lib.DelNetworkList(ctx, list, e.rt("c1", "eth0", "")); err != nil {
		t.Fatalf("DEL with empty netns: %v", err)
	}
	if err := e.lib.DelNetworkList(ctx, list, e.rt("c1", "eth0", "")); err != nil {
		t.Fatalf("DEL again: %v", err)
	}
	if err := e.newLib().DelNetworkList(ctx, list, e.rt("never-added", "eth0", e.netns("x"))); err != nil {
		t.Fatalf("DEL of an ID never added: %v", err)
	}
	// The network itself removed since: DEL still succeeds.
	gone := e.rawList("1.1.0", `{"type":"netalias","network":"gone","stateDir":"`+e.dir+`"}`)
	if err := e.newLib().DelNetworkList(ctx, gone, e.rt("c1", "eth0", "")); err != nil {
		t.Fatalf("DEL on a removed network: %v", err)
	}
	if n := len(e.state().Networks["testnet"].Attachments); n != 0 {
		t.Errorf("%d attachments left", n)
	}
}

func TestCheck(t *testing.T) {
	e := newEnv(t, testnet())
	list := e.list(ConflistOptions{CNIVersion: "1.1.0"})
	rt := e.rt("c1", "eth0", e.netns("ns"))
	if _, err := e.lib.AddNetworkList(ctx, list, rt); err != nil {
		t.Fatal(err)
	}
	if err := e.lib.CheckNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("CHECK of a whole attachment: %v", err)
	}
	st := e.state()

	// The backend finds a part missing.
	st.Networks["testnet"].Damage = "the default route"
	e.save(st)
	err := e.lib.CheckNetworkList(ctx, list, rt)
	if codeOf(err) != CodeDamaged || !strings.Contains(err.Error(), "default route is missing") {
		t.Errorf("CHECK with a missing route: %v (code %d)", err, codeOf(err))
	}

	// The recorded address no longer matches what ADD returned.
	st.Networks["testnet"].Damage = ""
	st.Networks["testnet"].Attachments[0].IPv4 = "10.88.7.99"
	e.save(st)
	err = e.lib.CheckNetworkList(ctx, list, rt)
	if codeOf(err) != CodeDamaged || !strings.Contains(err.Error(), "10.88.7.99/24") || !strings.Contains(err.Error(), "10.88.7.2/24") {
		t.Errorf("CHECK with another address: %v (code %d)", err, codeOf(err))
	}

	// The attachment is gone from the state.
	st.Networks["testnet"].Attachments = nil
	e.save(st)
	err = e.lib.CheckNetworkList(ctx, list, rt)
	if codeOf(err) != types.ErrUnknownContainer || !strings.Contains(err.Error(), "c1/eth0") {
		t.Errorf("CHECK of a vanished attachment: %v (code %d)", err, codeOf(err))
	}
}

// TestGC: the runtime's valid list keeps its attachments; the others made
// through the same CNI network go; other CNI networks' attachments and
// `netalias connect` endpoints (not CNI attachments) are not touched.
func TestGC(t *testing.T) {
	for _, key := range []string{"libcni (both keys)", "cni.dev/valid-attachments", "cni.dev/attachments"} {
		t.Run(key, func(t *testing.T) {
			e := newEnv(t, testnet())
			list := e.list(ConflistOptions{CNIVersion: "1.1.0"})
			other := e.list(ConflistOptions{CNIVersion: "1.1.0", Name: "othernet"})
			for _, id := range []string{"keep1", "stale1", "stale2"} {
				if _, err := e.lib.AddNetworkList(ctx, list, e.rt(id, "eth0", e.netns(id))); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.lib.AddNetworkList(ctx, other, e.rt("elsewhere", "eth0", e.netns("o"))); err != nil {
				t.Fatal(err)
			}
			valid := `[{"containerID":"keep1","ifname":"eth0"},{"containerID":"absent","ifname":"eth0"}]`
			switch key {
			case "libcni (both keys)":
				// A runtime with an empty cache: libcni sends only the GC.
				err := e.newLib().GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "keep1", IfName: "eth0"}, {ContainerID: "absent", IfName: "eth0"}}})
				if err != nil {
					t.Fatalf("GC: %v", err)
				}
			default:
				conf := `{"cniVersion":"1.1.0","name":"testnet","type":"netalias","network":"testnet","stateDir":"` + e.dir + `","` + key + `":` + valid + `}`
				if out, _, code := e.run(map[string]string{"CNI_COMMAND": "GC"}, conf); code != 0 {
					t.Fatalf("GC exit %d: %s", code, out)
				}
			}
			var left []string
			for _, a := range e.state().Networks["testnet"].Attachments {
				left = append(left, a.ContainerID)
			}
			if !slices.Equal(left, []string{"keep1", "elsewhere"}) {
				t.Errorf("after GC: %v, want [keep1 elsewhere]", left)
			}
			calls := e.state().Calls
			gc := calls[len(calls)-1]
			if gc.Op != "GC" || gc.CNINet != "testnet" || len(gc.Keep) != 2 || gc.Keep[0] != (Key{"keep1", "eth0"}) {
				t.Errorf("backend GC call %+v", gc)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	cases := []struct {
		status string
		code   uint
		says   string
	}{
		{"", 0, ""},
		{"unavailable", 50, "cannot be restored"},
		{"degraded", 51, "firewall"},
		{"full", 50, "no free address"},
		{"io", 50, "not writable"},
	}
	for _, c := range cases {
		t.Run("status="+c.status, func(t *testing.T) {
			e := newEnv(t, map[string]*fakeNet{"testnet": {Subnet: "10.88.7.0/24", Status: c.status}})
			err := e.lib.GetStatusNetworkList(ctx, e.list(ConflistOptions{CNIVersion: "1.1.0"}))
			if codeOf(err) != c.code || (err != nil && !strings.Contains(err.Error(), c.says)) {
				t.Errorf("STATUS: %v (code %d), want code %d mentioning %q", err, codeOf(err), c.code, c.says)
			}
		})
	}
	t.Run("network not created yet", func(t *testing.T) {
		e := newEnv(t, testnet())
		err := e.lib.GetStatusNetworkList(ctx, e.rawList("1.1.0", `{"type":"netalias","network":"later","stateDir":"`+e.dir+`"}`))
		if codeOf(err) != 50 || !strings.Contains(err.Error(), "netalias network create later") {
			t.Errorf("STATUS: %v (code %d), want 50 naming the command", err, codeOf(err))
		}
	})
}

// TestChainedAfterAnotherPlugin: when netalias is not first, the previous
// result is kept and ours appended (indices shifted, dns merged).
func TestChainedAfterAnotherPlugin(t *testing.T) {
	prev := &types100.Result{
		CNIVersion: "1.1.0",
		Interfaces: []*types100.Interface{{Name: "cni0"}, {Name: "veth1"}, {Name: "net1", Sandbox: "/run/netns/x"}},
		IPs:        []*types100.IPConfig{{Interface: types100.Int(2), Address: net.IPNet{IP: net.IPv4(192, 168, 1, 5).To4(), Mask: net.CIDRMask(24, 32)}}},
		DNS:        types.DNS{Nameservers: []string{"192.168.1.1"}, Search: []string{"corp"}},
	}
	a := &Attachment{Network: "testnet", HostVeth: "navX", IfName: "eth0", IPv4: netip.MustParsePrefix("10.88.7.2/24"), Gateway4: netip.MustParseAddr("10.88.7.1"), DefaultRoute: true}
	r := buildResult(a, "/run/netns/x", prev)
	if len(r.Interfaces) != 5 || r.Interfaces[4].Name != "eth0" || *r.IPs[0].Interface != 2 || *r.IPs[1].Interface != 4 {
		t.Errorf("interfaces/ips not merged: %+v %+v", r.Interfaces, r.IPs)
	}
	if !slices.Equal(r.DNS.Nameservers, []string{"192.168.1.1", "10.88.7.1"}) || !slices.Equal(r.DNS.Search, []string{"corp", "testnet"}) {
		t.Errorf("dns %+v", r.DNS)
	}
	if len(prev.Interfaces) != 3 || len(prev.DNS.Nameservers) != 1 {
		t.Error("buildResult changed prevResult")
	}
}

// A runtime retrying an ADD whose answer it lost (the plugin was killed
// after the commit) gets the attachment back, also when that ADD fell
// back to the short ID because the pod name was taken; while the pod
// name is free, an attachment under the short ID is no answer to it
// (TestSecondInterfaceSameContainer).
func TestRetriedAddAfterShortIDFallback(t *testing.T) {
	nets := testnet()
	nets["testnet"].Taken = []string{"web"}
	e := newEnv(t, nets)
	rt := e.rt("0123456789abcdef", "eth0", e.netns("ns"), [2]string{"K8S_POD_NAME", "web"})
	list := e.list(ConflistOptions{})
	first, err := e.lib.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	again, err := e.newLib().AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("retried ADD: %v", err)
	}
	r1, _ := types100.GetResult(first)
	r2, _ := types100.GetResult(again)
	if len(r1.IPs) == 0 || len(r2.IPs) == 0 || r1.IPs[0].Address.String() != r2.IPs[0].Address.String() {
		t.Errorf("retried ADD answered %v, the first %v", r2.IPs, r1.IPs)
	}
	if atts := e.state().Networks["testnet"].Attachments; len(atts) != 1 || atts[0].Name != "0123456789ab" {
		t.Errorf("attachments after the retry: %+v", atts)
	}
}
