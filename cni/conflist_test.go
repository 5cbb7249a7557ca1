package cni

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestConflist(t *testing.T) {
	b, err := Conflist(ConflistOptions{Network: "testnet", Plugins: []string{"portmap", "tuning"}})
	if err != nil {
		t.Fatal(err)
	}
	// What runtimes load it with.
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatalf("libcni: %v\n%s", err, b)
	}
	if l.Name != "testnet" || l.CNIVersion != DefaultConflistVersion || len(l.Plugins) != 3 {
		t.Fatalf("name %q version %q %d plugins:\n%s", l.Name, l.CNIVersion, len(l.Plugins), b)
	}
	var types []string
	for _, p := range l.Plugins {
		types = append(types, p.Network.Type)
	}
	if strings.Join(types, ",") != "netalias,portmap,tuning" {
		t.Errorf("plugin order %v, want netalias first", types)
	}
	first := l.Plugins[0].Network
	if !first.Capabilities["aliases"] || !first.Capabilities["ips"] || !first.Capabilities["mac"] {
		t.Errorf("netalias capabilities %v", first.Capabilities)
	}
	if !l.Plugins[1].Network.Capabilities["portMappings"] {
		t.Errorf("portmap without the portMappings capability:\n%s", b)
	}
	// And netalias reads its own entry back.
	c, terr := ParseConfig(l.Plugins[0].Bytes)
	if terr != nil {
		t.Fatal(terr)
	}
	if c.Network != "testnet" || c.StateDir != "/var/lib/netalias" {
		t.Errorf("parsed back: network %q stateDir %q", c.Network, c.StateDir)
	}
	if !json.Valid(b) || b[len(b)-1] != '\n' {
		t.Error("not a JSON file ending in a newline")
	}
}

func TestConflistOptions(t *testing.T) {
	b, err := Conflist(ConflistOptions{Network: "testnet", Name: "podman_net.1", StateDir: "/srv/na", CNIVersion: "1.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	c, terr := ParseConfig(l.Plugins[0].Bytes)
	if terr != nil {
		t.Fatal(terr)
	}
	if l.Name != "podman_net.1" || l.CNIVersion != "1.1.0" || c.Network != "testnet" || c.StateDir != "/srv/na" {
		t.Errorf("got name %q version %q network %q dir %q", l.Name, l.CNIVersion, c.Network, c.StateDir)
	}
}

func TestConflistRefuses(t *testing.T) {
	cases := []struct {
		o    ConflistOptions
		says string
	}{
		{ConflistOptions{Network: "test_net"}, "test_net"},
		{ConflistOptions{Network: ""}, "network name"},
		{ConflistOptions{Network: "testnet", StateDir: "state"}, "absolute"},
		{ConflistOptions{Network: "testnet", CNIVersion: "0.2.0"}, "0.2.0"},
		{ConflistOptions{Network: "testnet", Plugins: []string{"bridge"}}, `"bridge"`},
		{ConflistOptions{Network: "testnet", Plugins: []string{"portmap", "portmap"}}, "twice"},
		{ConflistOptions{Network: "testnet", Name: "bad name"}, "bad name"},
	}
	for _, c := range cases {
		if _, err := Conflist(c.o); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("Conflist(%+v) = %v, want an error mentioning %q", c.o, err, c.says)
		}
	}
}

func TestShortID(t *testing.T) {
	cases := map[string]string{
		"4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a99": "4f3c2b1a0e9d",
		"abc":                              "abc",
		"My_Container.1":                   "my-container",
		"pod_":                             "pod",
		"__..":                             "",
	}
	for in, want := range cases {
		got := shortID(in)
		if want == "" {
			if !strings.HasPrefix(got, "cni-") {
				t.Errorf("shortID(%q) = %q, want a cni-HASH fallback", in, got)
			}
			continue
		}
		if got != want {
			t.Errorf("shortID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	a, err := parseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;IP=10.1.0.5, fd00::5;MAC=aa:bb:cc:dd:ee:ff;K8S_POD_INFRA_CONTAINER_ID=x")
	if err != nil {
		t.Fatal(err)
	}
	if a.PodName != "web" || strings.Join(a.IPs, ",") != "10.1.0.5,fd00::5" || a.MAC != "aa:bb:cc:dd:ee:ff" {
		t.Errorf("%+v", a)
	}
	if _, err := parseArgs("=x"); err == nil || err.Code != 4 {
		t.Errorf("empty key: %v", err)
	}
}
