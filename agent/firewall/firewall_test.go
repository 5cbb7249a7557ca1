package firewall

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The rules a set of networks produces, as text, against golden files (as
// moby's nftabler tests do): a rule change shows in review. Run with
// -update to rewrite them.
func TestRulesGolden(t *testing.T) {
	ext := Net{Bridge: "na-0123456789ab", Subnet: netip.MustParsePrefix("10.77.0.0/24")}
	dual := Net{Bridge: "na-22223333aaaa", Subnet: netip.MustParsePrefix("10.78.0.0/24"), Subnet6: netip.MustParsePrefix("fd00:78::/64")}
	internal := Net{Bridge: "na-ffffeeee0000", Subnet: netip.MustParsePrefix("10.79.0.0/26"), Internal: true}
	for _, tc := range []struct {
		name string
		nets []Net
	}{
		{"none", nil},
		{"one", []Net{ext}},
		{"dual-stack", []Net{dual}},
		{"internal", []Net{internal}},
		{"mixed", []Net{ext, dual, internal}},
		{"overlay", []Net{ext, {Bridge: "na-44445555bbbb", Subnet: netip.MustParsePrefix("10.80.0.0/20"), OverlayPort: 4789},
			{Bridge: "na-66667777cccc", Subnet: netip.MustParsePrefix("10.81.0.0/20"), Internal: true, OverlayPort: 4789}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := "# table inet netalias\n" + Render(Rules(DefaultTable, tc.nets)) +
				"# each dropping filter FORWARD chain (ip, ip6)\n" + Render(ForwardRules(DefaultTable, tc.nets))
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("rules differ from %s (go test -update rewrites it):\n%s", path, got)
			}
		})
	}
}

func TestTableName(t *testing.T) {
	for _, tc := range []struct{ name, dir, want string }{
		{"default dir", "/var/lib/netalias", "netalias"},
		{"other dir", "/tmp/x", "netalias-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := TableName(tc.dir, "/var/lib/netalias")
			if tc.want == "netalias" && got != tc.want || tc.want != "netalias" && (len(got) != len("netalias-")+8 || got[:9] != tc.want) {
				t.Errorf("TableName(%q) = %q", tc.dir, got)
			}
		})
	}
}
