// Package test holds end-to-end tests: real binaries, real namespaces,
// real container engines. Each file covers one area (agent_*, dns_*,
// docker_*, image_*); they share the binaries built here.
package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	binDir     string
	buildOnce  = map[string]*sync.Once{"netalias": {}, "netalias-full": {}, "coredns": {}}
	buildErr   = map[string]error{}
	buildMutex sync.Mutex
)

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "netalias-test-bin-")
	if err != nil {
		panic(err)
	}
	binDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// builds says how `make build` makes each binary: netalias is the light
// build, which runs netalias-full (beside it) for cluster mode and
// docker-plugin, so both are built together.
var builds = map[string]struct {
	pkg, tags string
	with      []string
}{
	"netalias":      {pkg: "netalias", tags: "netalias_lite", with: []string{"netalias-full"}},
	"netalias-full": {pkg: "netalias"},
	"coredns":       {pkg: "coredns"},
}

// binary builds NAME as `make build` does, once per test run, and returns
// its path.
func binary(t testing.TB, name string) string {
	t.Helper()
	for _, w := range builds[name].with {
		binary(t, w)
	}
	buildMutex.Lock()
	once := buildOnce[name]
	buildMutex.Unlock()
	out := filepath.Join(binDir, name)
	once.Do(func() {
		b := builds[name]
		cmd := exec.Command("go", "build", "-tags="+b.tags, "-o", out, "./cmd/"+b.pkg)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			buildMutex.Lock()
			buildErr[name] = &buildError{name: name, out: string(b), err: err}
			buildMutex.Unlock()
		}
	})
	buildMutex.Lock()
	err := buildErr[name]
	buildMutex.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type buildError struct {
	name, out string
	err       error
}

func (e *buildError) Error() string {
	return "go build ./cmd/" + e.name + ": " + e.err.Error() + "\n" + e.out
}
