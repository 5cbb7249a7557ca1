package test

import (
	"context"
	"debug/buildinfo"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The CoreDNS build lists netalias and the curated standard plugins.
func TestDNSBuildPlugins(t *testing.T) {
	out, err := exec.Command(binary(t, "coredns"), "-plugins").CombinedOutput()
	if err != nil {
		t.Fatalf("coredns -plugins: %v\n%s", err, out)
	}
	listed := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		listed[strings.TrimPrefix(strings.TrimSpace(l), "dns.")] = true
	}
	for _, p := range []string{"netalias", "bind", "cache", "errors", "forward", "health", "hosts", "log", "loop", "prometheus", "ready", "reload", "acl", "loadbalance", "whoami"} {
		if !listed[p] {
			t.Errorf("coredns -plugins does not list %s", p)
		}
	}
}

// A Corefile error names the problem and the server does not start.
func TestDNSBadCorefile(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ body, want string }{
		{".:0 {\n bind 127.0.2.1\n netalias {\n  ttl lots\n }\n}\n", "ttl"},
		{".:0 {\n bind 127.0.2.1\n netalias {\n  clients 10.0.0.0/99\n }\n}\n", "10.0.0.0/99"},
		{".:0 {\n bind 127.0.2.1\n netalias {\n  bogus\n }\n}\n", "unknown property 'bogus'"},
	} {
		p := dir + "/Corefile"
		if err := writeFile(p, c.body); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, binary(t, "coredns"), "-conf", p).CombinedOutput()
		cancel()
		if err == nil {
			t.Fatalf("coredns started with %q", c.body)
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("error for %q does not name %q:\n%s", c.body, c.want, out)
		}
	}
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }

// coredns -version names CoreDNS's version and, on a line of its own, the
// netalias version it was built with (the revision it was built from).
func TestDNSBuildVersion(t *testing.T) {
	bin := binary(t, "coredns")
	out, err := exec.Command(bin, "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("coredns -version: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "CoreDNS-") {
		t.Fatalf("coredns -version: want CoreDNS-VERSION, netalias-VERSION and the platform line, got:\n%s", out)
	}
	v, ok := strings.CutPrefix(lines[1], "netalias-")
	if !ok || v == "" || strings.ContainsAny(v, " \t") {
		t.Fatalf("coredns -version: second line %q, want netalias-VERSION", lines[1])
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	// binary builds without -X, so the version comes from the build info:
	// the revision when stamped, else the module version, else "dev".
	want := "dev"
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		want = bi.Main.Version
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			want = s.Value[:min(12, len(s.Value))]
		}
	}
	if !strings.Contains(v, want) {
		t.Errorf("coredns -version says netalias-%s, want the version it was built as (%s)", v, want)
	}
}
