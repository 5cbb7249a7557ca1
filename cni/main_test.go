package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// pluginDir holds "netalias": this test binary under the plugin's type
// name. Run under that name it is the plugin (cni.Main over the fake
// backend), so libcni drives a real executable as Podman and containerd
// do, with the real environment, stdin and stdout protocol.
var pluginDir string

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "netalias" {
		Main(openFake)
		os.Exit(0)
	}
	d, err := os.MkdirTemp("", "netalias-cni-test-")
	if err != nil {
		panic(err)
	}
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	if err := os.Symlink(exe, filepath.Join(d, "netalias")); err != nil {
		panic(err)
	}
	pluginDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// cniEnv is one state directory with a fake backend, and libcni pointed
// at the plugin with a private cache.
type cniEnv struct {
	t      *testing.T
	dir    string
	lib    *libcni.CNIConfig
	stderr *bytes.Buffer // the plugin's stderr on success, as libcni passes it on
}

// testnet is the network most tests attach to.
func testnet() map[string]*fakeNet {
	return map[string]*fakeNet{"testnet": {Subnet: "10.88.7.0/24", MTU: 1400}}
}

func newEnv(t *testing.T, nets map[string]*fakeNet) *cniEnv {
	t.Helper()
	e := &cniEnv{t: t, dir: t.TempDir(), stderr: &bytes.Buffer{}}
	e.save(fakeState{Networks: nets})
	e.lib = e.newLib()
	return e
}

// newLib is another runtime (its own libcni cache) on the same state.
func (e *cniEnv) newLib() *libcni.CNIConfig {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: e.stderr}, PluginDecoder: version.PluginDecoder{}}
	return libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, e.t.TempDir(), exec)
}

func (e *cniEnv) save(st fakeState) {
	e.t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, fakeFile), b, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *cniEnv) state() fakeState {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, fakeFile))
	if err != nil {
		e.t.Fatal(err)
	}
	var st fakeState
	if err := json.Unmarshal(b, &st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// lastAdd is the request the backend got in the last ADD.
func (e *cniEnv) lastAdd() AddRequest {
	e.t.Helper()
	st := e.state()
	for i := len(st.Calls) - 1; i >= 0; i-- {
		if st.Calls[i].Op == "ADD" {
			return *st.Calls[i].Add
		}
	}
	e.t.Fatal("the backend got no ADD")
	return AddRequest{}
}

// list is the generated conflist for a network of this state directory.
func (e *cniEnv) list(o ConflistOptions) *libcni.NetworkConfigList {
	e.t.Helper()
	if o.Network == "" {
		o.Network = "testnet"
	}
	o.StateDir = e.dir
	b, err := Conflist(o)
	if err != nil {
		e.t.Fatal(err)
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		e.t.Fatalf("libcni refuses the generated conflist: %v\n%s", err, b)
	}
	return l
}

// rawList is a conflist with netalias's entry given as JSON.
func (e *cniEnv) rawList(cniVersion, entry string) *libcni.NetworkConfigList {
	e.t.Helper()
	b := `{"cniVersion":"` + cniVersion + `","name":"testnet","plugins":[` + entry + `]}`
	l, err := libcni.ConfListFromBytes([]byte(b))
	if err != nil {
		e.t.Fatalf("%v\n%s", err, b)
	}
	return l
}

// netns is a path standing for a namespace (the fake backend only
// records it).
func (e *cniEnv) netns(name string) string {
	e.t.Helper()
	p := filepath.Join(e.t.TempDir(), name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *cniEnv) rt(id, ifname, netns string, args ...[2]string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, IfName: ifname, NetNS: netns, Args: args, CapabilityArgs: map[string]any{}}
}

// run executes the plugin directly with env (CNI_PATH added) and stdin,
// for what libcni would never send.
func (e *cniEnv) run(env map[string]string, stdin string) (stdout, stderr string, code int) {
	e.t.Helper()
	c := exec.Command(filepath.Join(pluginDir, "netalias"))
	c.Env = []string{"CNI_PATH=" + pluginDir}
	for k, v := range env {
		c.Env = append(c.Env, k+"="+v)
	}
	c.Stdin = strings.NewReader(stdin)
	var o, er bytes.Buffer
	c.Stdout, c.Stderr = &o, &er
	err := c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return o.String(), er.String(), code
}

// cniError decodes the spec's error object a failed plugin printed.
func (e *cniEnv) cniError(stdout string) types.Error {
	e.t.Helper()
	var te types.Error
	if err := json.Unmarshal([]byte(stdout), &te); err != nil || te.Code == 0 {
		e.t.Fatalf("stdout is not a CNI error object (%v): %q", err, stdout)
	}
	return te
}

// codeOf is the CNI error code in an error libcni returned, 0 if none.
func codeOf(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

var ctx = context.Background()
