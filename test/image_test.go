package test

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/state"
)

// The sidecar image builds with no registry (FROM scratch, binaries built
// here), runs as the README says (host network, NET_ADMIN, the state
// directory mounted) and answers from the agent's state, following changes.
func TestSidecarImage(t *testing.T) {
	testenv.RequireDocker(t)
	ctxDir := t.TempDir()
	for _, f := range []string{"Dockerfile", ".dockerignore", "Corefile.example"} {
		sidecarCopy(t, filepath.Join("..", f), filepath.Join(ctxDir, f))
	}
	for _, b := range []string{"coredns", "netalias", "netalias-full"} {
		sidecarCopy(t, binary(t, b), filepath.Join(ctxDir, "bin", b))
	}
	suffix := sidecarSuffix(t, 4)
	image := "natest-sidecar-" + suffix + ":latest"
	sidecarRun(t, "docker", "build", "-q", "-t", image, ctxDir)
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })

	// The image's binaries are static and self-sufficient.
	if out := sidecarRun(t, "docker", "run", "--rm", "--entrypoint", "/coredns", image, "-plugins"); !strings.Contains(out, "netalias") {
		t.Fatalf("coredns -plugins in the image does not list netalias:\n%s", out)
	}
	if out := sidecarRun(t, "docker", "run", "--rm", "--entrypoint", "/netalias", image, "--help"); !strings.Contains(out, "network") {
		t.Fatalf("netalias --help in the image says:\n%s", out)
	}
	// The light netalias finds netalias-full beside it.
	if out := sidecarRun(t, "docker", "run", "--rm", "--entrypoint", "/netalias", image, "docker-plugin", "--help"); !strings.Contains(out, "--docker-host") {
		t.Fatalf("netalias docker-plugin --help in the image says:\n%s", out)
	}

	stateDir := t.TempDir()
	file := &state.File{
		Network: state.Network{ID: "0123456789ab" + strings.Repeat("0", 52), Name: "imgnet", Bridge: "na-0123456789ab",
			Subnet: netip.MustParsePrefix("10.205.0.0/24"), Gateway: netip.MustParseAddr("10.205.0.1"), MTU: 1500},
		Endpoints: []state.Endpoint{{ID: state.NewID(), Name: "web", IPv4: netip.MustParseAddr("10.205.0.10"), MAC: "02:42:0a:cd:00:0a",
			IfName: "eth0", Netns: "/run/netns/web", Container: "/run/netns/web"}},
	}
	if err := state.Write(stateDir, file); err != nil {
		t.Fatal(err)
	}
	corefile := filepath.Join(t.TempDir(), "Corefile")
	const server = "127.0.4.1"
	if err := os.WriteFile(corefile, []byte(".:53 {\n\tbind "+server+"\n\tnetalias\n\terrors\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	name := "natest-sidecar-" + suffix
	sidecarRun(t, "docker", "run", "-d", "--name", name, "--network", "host", "--cap-add", "NET_ADMIN",
		"-v", stateDir+":/var/lib/netalias:ro", "-v", corefile+":/etc/coredns/Corefile:ro", image)
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := exec.Command("docker", "logs", name).CombinedOutput()
			t.Logf("sidecar logs:\n%s", logs)
		}
		exec.Command("docker", "rm", "-f", name).Run()
	})

	sidecarWaitA(t, server, "web.imgnet.", "10.205.0.10")

	// A change in the mounted state directory reaches the container.
	file.Endpoints[0].Aliases = []string{"frontend"}
	if err := state.Write(stateDir, file); err != nil {
		t.Fatal(err)
	}
	sidecarWaitA(t, server, "frontend.imgnet.", "10.205.0.10")
}

// sidecarWaitA polls server until name has exactly the A record want.
func sidecarWaitA(t *testing.T, server, name, want string) {
	t.Helper()
	c := &dns.Client{Timeout: time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		r, _, err := c.Exchange(m, server+":53")
		if err != nil {
			last = err.Error()
			continue
		}
		if len(r.Answer) == 1 {
			if a, ok := r.Answer[0].(*dns.A); ok && a.A.String() == want {
				return
			}
		}
		last = r.String()
	}
	t.Fatalf("%s did not answer %s with %s; last reply:\n%s", server, name, want, last)
}

func sidecarRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func sidecarCopy(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	info, err := src.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
}

func sidecarSuffix(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
