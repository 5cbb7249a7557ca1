package state

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	netID = "3f0c9a1be2d74c55a1e0f2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"
	epID  = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
)

func sample() *File {
	return &File{
		Network: Network{ID: netID, Name: "testnet", Bridge: "na-3f0c9a1be2d7",
			Subnet: netip.MustParsePrefix("10.9.0.0/24"), Gateway: netip.MustParseAddr("10.9.0.1"), MTU: 1500},
		Endpoints: []Endpoint{{ID: epID, Name: "c1", Aliases: []string{"centos-1"}, IPv4: netip.MustParseAddr("10.9.0.2"),
			Links: []Link{{Target: "db1", Alias: "db"}}}},
		Leases: map[string]Lease{"c1": {IPv4: netip.MustParseAddr("10.9.0.2")}},
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, sample()); err != nil {
		t.Fatal(err)
	}
	got, err := Read(NetworkPath(dir, "testnet"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != Version || got.Endpoints[0].Aliases[0] != "centos-1" || got.Leases["c1"].IPv4 != netip.MustParseAddr("10.9.0.2") {
		t.Fatalf("round trip lost data: %+v", got)
	}
	// No temp file is left beside the network file.
	entries, _ := os.ReadDir(NetworksPath(dir))
	if len(entries) != 1 {
		t.Fatalf("networks dir holds %d entries, want 1", len(entries))
	}
}

// Files written by the string-typed format (before addresses were netip
// types) decode and re-encode to the very same bytes: the format did not
// change, only its Go types.
func TestFormatUnchanged(t *testing.T) {
	for _, name := range []string{"v1-dualstack.json", "v1-internal.json"} {
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			f, err := Decode(name, want)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Encode(f)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("re-encoded file differs:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	const net = `"id":"` + netID + `","name":"n"`
	const ep = `"id":"` + epID + `","name":"a"`
	for _, tc := range []struct{ name, data, want string }{
		{"not json", `{"version":1,`, "unexpected end"},
		{"future version", `{"version":99,"network":{` + net + `,"subnet":"10.0.0.0/24"}}`, "unsupported version 99"},
		{"no name", `{"version":1,"network":{"id":"` + netID + `","subnet":"10.0.0.0/24"}}`, "no name"},
		{"no id", `{"version":1,"network":{"name":"n","subnet":"10.0.0.0/24"}}`, `id "" is 0 characters`},
		{"short id", `{"version":1,"network":{"id":"abc","name":"n","subnet":"10.0.0.0/24"}}`, `id "abc" is 3 characters`},
		{"odd id", `{"version":1,"network":{"id":"` + strings.Repeat("Z", 64) + `","name":"n","subnet":"10.0.0.0/24"}}`, `'Z' at 0`},
		{"bad subnet", `{"version":1,"network":{` + net + `,"subnet":"10.0.0.0"}}`, "10.0.0.0"},
		{"no subnet", `{"version":1,"network":{` + net + `}}`, "not an IPv4 CIDR"},
		{"v6 subnet", `{"version":1,"network":{` + net + `,"subnet":"fd00::/64"}}`, "not an IPv4 CIDR"},
		{"gateway outside", `{"version":1,"network":{` + net + `,"subnet":"10.0.0.0/24","gateway":"10.0.1.1"}}`, "outside subnet"},
		{"v4 subnet6", `{"version":1,"network":{` + net + `,"subnet":"10.0.0.0/24","subnet6":"10.1.0.0/24"}}`, "not an IPv6 CIDR"},
		{"bad address", `{"version":1,"network":{` + net + `,"subnet":"10.0.0.0/24"},"endpoints":[{` + ep + `,"ipv4":"10.0.0.300"}]}`, "10.0.0.300"},
		{"address outside", `{"version":1,"network":{` + net + `,"subnet":"10.0.0.0/24"},"endpoints":[{` + ep + `,"ipv4":"10.0.9.3"}]}`, "outside subnet"},
		{"ipv6 without subnet6", `{"version":1,"network":{` + net + `,"subnet":"10.0.0.0/24"},"endpoints":[{` + ep + `,"ipv6":"fd00::3"}]}`, "outside subnet6"},
		{"endpoint short id", `{"version":1,"network":{` + net + `,"subnet":"10.0.0.0/24"},"endpoints":[{"id":"e1","name":"a"}]}`, `endpoint "a": id "e1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode("/x/n.json", []byte(tc.data))
			var ce *CorruptError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), "/x/n.json") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want a CorruptError naming the path and %q", err, tc.want)
			}
		})
	}
}

func TestNewIDIsValid(t *testing.T) {
	a, b := NewID(), NewID()
	if err := ValidID(a); err != nil || a == b {
		t.Fatalf("NewID() = %q, %q: %v", a, b, err)
	}
}

func TestNetworkNameFromPath(t *testing.T) {
	for p, want := range map[string]string{
		"/d/networks/testnet.json":            "testnet",
		"/d/networks/.testnet.json.tmp-123":   "",
		"/d/networks/readme.txt":              "",
		filepath.Join("networks", "a-b.json"): "a-b",
	} {
		if got := NetworkNameFromPath(p); got != want {
			t.Errorf("NetworkNameFromPath(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestDir(t *testing.T) {
	t.Setenv(EnvDir, "")
	if Dir("") != DefaultDir || Dir("/x") != "/x" {
		t.Fatal("flag or default not honoured")
	}
	t.Setenv(EnvDir, "/env")
	if Dir("") != "/env" || Dir("/x") != "/x" {
		t.Fatal("environment not honoured, or preferred over the flag")
	}
}

func TestValidateAttachments(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ep      func(*Endpoint)
		wantErr string
	}{
		{"cni with a name", func(e *Endpoint) { e.Attachment = &Attachment{Runtime: RuntimeCNI, ID: "c1", Network: "podnet"} }, ""},
		{"docker without a name", func(e *Endpoint) { e.Name = ""; e.Attachment = &Attachment{Runtime: RuntimeDocker, ID: "ep1"} }, ""},
		{"cni without a name", func(e *Endpoint) { e.Name = ""; e.Attachment = &Attachment{Runtime: RuntimeCNI, ID: "c1"} }, "has no name"},
		{"unknown runtime", func(e *Endpoint) { e.Attachment = &Attachment{Runtime: "rkt", ID: "x"} }, `unknown runtime "rkt"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := sample()
			f.Version = Version
			tc.ep(&f.Endpoints[0])
			err := f.Validate()
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
