package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sample() *File {
	return &File{
		Network: Network{ID: "abc", Name: "testnet", Bridge: "na-abc", Subnet: "10.9.0.0/24", Gateway: "10.9.0.1", MTU: 1500},
		Endpoints: []Endpoint{{ID: "e1", Name: "c1", Aliases: []string{"centos-1"}, IPv4: "10.9.0.2",
			Links: []Link{{Target: "db1", Alias: "db"}}}},
		Leases: map[string]Lease{"c1": {IPv4: "10.9.0.2"}},
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
	if got.Version != Version || got.Endpoints[0].Aliases[0] != "centos-1" || got.Leases["c1"].IPv4 != "10.9.0.2" {
		t.Fatalf("round trip lost data: %+v", got)
	}
	// No temp file is left beside the network file.
	entries, _ := os.ReadDir(NetworksPath(dir))
	if len(entries) != 1 {
		t.Fatalf("networks dir holds %d entries, want 1", len(entries))
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, data := range map[string]string{
		"not json":       `{"version":1,`,
		"future version": `{"version":99,"network":{"name":"n","subnet":"10.0.0.0/24"}}`,
		"no name":        `{"version":1,"network":{"subnet":"10.0.0.0/24"}}`,
		"bad subnet":     `{"version":1,"network":{"name":"n","subnet":"10.0.0.0"}}`,
		"bad address":    `{"version":1,"network":{"name":"n","subnet":"10.0.0.0/24"},"endpoints":[{"name":"a","ipv4":"10.0.0.300"}]}`,
	} {
		_, err := Decode("/x/n.json", []byte(data))
		var ce *CorruptError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "/x/n.json") {
			t.Errorf("%s: got %v, want a CorruptError naming the path", name, err)
		}
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
