package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/netalias/netalias/state"
)

func writeNetwork(t *testing.T, dir, name string) {
	t.Helper()
	doc := `{"version":1,"network":{"id":"1111111111111111111111111111111111111111111111111111111111111111","name":"` + name +
		`","bridge":"na-111111111111","subnet":"10.1.0.0/24","gateway":"10.1.0.1","internal":false,"mtu":1500},"endpoints":[]}`
	if err := os.MkdirAll(state.NetworksPath(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state.NetworkPath(dir, name), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCNIConflist(t *testing.T) {
	dir := t.TempDir()
	writeNetwork(t, dir, "testnet")
	r := cli("--state-dir", dir, "cni", "conflist", "--name", "pod_net.1", "--cni-version", "1.1.0", "--plugin", "portmap", "--plugin", "tuning", "testnet")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	l, err := libcni.ConfListFromBytes([]byte(r.stdout))
	if err != nil {
		t.Fatalf("libcni refuses the conflist: %v\n%s", err, r.stdout)
	}
	var types []string
	for _, p := range l.Plugins {
		types = append(types, p.Network.Type)
	}
	abs, _ := filepath.Abs(dir)
	if l.Name != "pod_net.1" || l.CNIVersion != "1.1.0" || !slices.Equal(types, []string{"netalias", "portmap", "tuning"}) ||
		!strings.Contains(string(l.Plugins[0].Bytes), `"stateDir":"`+abs+`"`) || !strings.Contains(string(l.Plugins[0].Bytes), `"network":"testnet"`) {
		t.Errorf("conflist %s", r.stdout)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cni", "conflist", "nope"}, `network "nope" does not exist`},
		{[]string{"--state-dir", filepath.Join(dir, "absent"), "cni", "conflist", "testnet"}, `network "testnet" does not exist`},
		{[]string{"cni", "conflist", "--plugin", "bridge", "testnet"}, `plugin "bridge" cannot be chained`},
		{[]string{"cni", "conflist", "--cni-version", "9.9.9", "testnet"}, `CNI version "9.9.9"`},
		{[]string{"cni", "conflist", "--name", "bad name", "testnet"}, `CNI network name "bad name"`},
	} {
		before := digest(t, dir)
		r := cli(append([]string{"--state-dir", dir}, tc.args...)...)
		if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want an error naming %s", tc.args, r.code, r.stdout, r.stderr, tc.want)
		}
		if !mapsEqual(before, digest(t, dir)) {
			t.Errorf("%v changed the state directory", tc.args)
		}
		if _, err := os.Stat(filepath.Join(dir, "absent")); err == nil {
			t.Errorf("%v created a state directory", tc.args)
		}
	}
}

// Plugin mode needs CNI_COMMAND and no arguments: the reaper, started
// from a plugin with arguments, is a command line whatever its
// environment (and it does not inherit CNI_* anyway).
func TestPluginMode(t *testing.T) {
	t.Setenv("CNI_COMMAND", "DEL")
	if !pluginMode(nil) {
		t.Error("CNI_COMMAND set, no arguments: not plugin mode")
	}
	if pluginMode([]string{"--state-dir", "/x", "__reap"}) {
		t.Error("the reaper's command line was taken for plugin mode")
	}
	t.Setenv("CNI_COMMAND", "")
	if pluginMode(nil) {
		t.Error("no CNI_COMMAND: plugin mode")
	}
	env := withoutCNIEnv([]string{"PATH=/bin", "CNI_COMMAND=DEL", "CNI_NETNS=/x", "NETALIAS_STATE_DIR=/s"})
	if !slices.Equal(env, []string{"PATH=/bin", "NETALIAS_STATE_DIR=/s"}) {
		t.Errorf("reaper environment %q", env)
	}
}
