package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/netalias/netalias/state"
)

// lsLines runs writeNetworks and returns its lines with each run of
// spaces (tabwriter padding) folded to one.
func lsLines(t *testing.T, files []*state.File, quiet bool) string {
	t.Helper()
	var b bytes.Buffer
	if err := writeNetworks(&b, files, quiet); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(out, "\n")
}

// `network ls` printed ID[:12] and panicked on a shorter ID, which a
// hand-edited state file can hold. The files are built here, not read, so
// that no validation stands between them and the formatting.
func TestNetworkLsShortID(t *testing.T) {
	files := []*state.File{
		{Network: state.Network{ID: "abc", Name: "short", Bridge: "na-short"}},
		{Network: state.Network{ID: "0123456789abcdef0123", Name: "long", Bridge: "na-long"}},
	}
	if got, want := lsLines(t, files, true), "abc\n0123456789ab"; got != want {
		t.Errorf("ls -q: got %q, want %q", got, want)
	}
	rows := strings.Split(lsLines(t, files, false), "\n")
	if len(rows) != 3 || !strings.HasPrefix(rows[1], "abc short ") || !strings.HasPrefix(rows[2], "0123456789ab long ") {
		t.Errorf("ls: got %q, want a header and rows starting \"abc short\", \"0123456789ab long\"", rows)
	}
}

// The table as users see it, from files as the state directory holds them.
func TestNetworkLsTable(t *testing.T) {
	var files []*state.File
	for _, doc := range []string{
		`{"version":1,"network":{"id":"1111111111111111111111111111111111111111111111111111111111111111","name":"v4","bridge":"na-v4","subnet":"10.1.0.0/24","gateway":"10.1.0.1","internal":false,"mtu":1500},
		  "endpoints":[{"id":"e1","name":"web","ipv4":"10.1.0.2","mac":"02:42:0a:01:00:02","host_veth":"nav1","ifname":"eth0","netns":"/run/netns/web","container":"web"}]}`,
		`{"version":1,"network":{"id":"2222222222222222222222222222222222222222222222222222222222222222","name":"dual","bridge":"na-dual","subnet":"10.2.0.0/24","gateway":"10.2.0.1","subnet6":"fd00:2::/64","gateway6":"fd00:2::1","internal":true,"mtu":1400}}`,
	} {
		f := new(state.File)
		if err := json.Unmarshal([]byte(doc), f); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	want := `NETWORK ID NAME BRIDGE SUBNET GATEWAY INTERNAL ENDPOINTS
111111111111 v4 na-v4 10.1.0.0/24 10.1.0.1 false 1
222222222222 dual na-dual 10.2.0.0/24,fd00:2::/64 10.2.0.1 true 0`
	if got := lsLines(t, files, false); got != want {
		t.Errorf("ls: got\n%s\nwant\n%s", got, want)
	}
}
