package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/netalias/netalias/cluster"
	"github.com/netalias/netalias/internal/version"
	"github.com/netalias/netalias/state"
)

type result struct {
	stdout, stderr string
	code           int
}

// cli runs one command line through the command tree in-process.
func cli(args ...string) result {
	var o, e bytes.Buffer
	code := execute(args, strings.NewReader(""), &o, &e)
	return result{o.String(), e.String(), code}
}

// visible walks the tree: every command a user can see, root first.
func visible(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		if !sub.Hidden {
			out = append(out, visible(sub)...)
		}
	}
	return out
}

// path is the command's words after the program name.
func path(c *cobra.Command) []string { return strings.Fields(c.CommandPath())[1:] }

// Every command answers --help, -h and `help COMMAND` with exit status 0
// and a help text that shows each of its flags with usage text. The tree
// is walked, so a new command or flag without help fails here.
func TestHelpDescribesEveryFlag(t *testing.T) {
	root := newRoot()
	root.InitDefaultHelpCmd() // as Execute does
	cmds := visible(root)
	if len(cmds) < 14 {
		t.Fatalf("walked %d commands, want the whole tree", len(cmds))
	}
	for _, c := range cmds {
		p := path(c)
		t.Run(strings.Join(append([]string{"netalias"}, p...), "_"), func(t *testing.T) {
			if c.Short == "" {
				t.Errorf("no Short description")
			}
			var flags []*pflag.Flag
			c.NonInheritedFlags().VisitAll(func(f *pflag.Flag) { flags = append(flags, f) })
			c.InheritedFlags().VisitAll(func(f *pflag.Flag) { flags = append(flags, f) })
			for _, args := range [][]string{append(slices.Clone(p), "--help"), append(slices.Clone(p), "-h"), append([]string{"help"}, p...)} {
				r := cli(args...)
				if r.code != 0 || r.stderr != "" {
					t.Errorf("%q: exit %d, stderr %q; want 0 and nothing", args, r.code, r.stderr)
					continue
				}
				if !strings.Contains(r.stdout, c.UseLine()) || !strings.Contains(r.stdout, c.Short) && !strings.Contains(r.stdout, c.Long) {
					t.Errorf("%q: help lacks the usage line %q or the description", args, c.UseLine())
				}
				for _, f := range flags {
					if f.Hidden {
						continue
					}
					if strings.TrimSpace(f.Usage) == "" {
						t.Errorf("flag --%s has no usage text", f.Name)
					}
					name := "--" + f.Name
					if f.Shorthand != "" {
						name = "-" + f.Shorthand + ", " + name
					}
					if !strings.Contains(r.stdout, name) {
						t.Errorf("%q: help does not show %s", args, name)
					}
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	r := cli("version")
	want := []string{"netalias version " + version.String() + "\n", runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}
	for _, w := range want {
		if r.code != 0 || !strings.Contains(r.stdout, w) {
			t.Errorf("version: exit %d, stdout %q; want %q in it", r.code, r.stdout, w)
		}
	}
	r = cli("version", "--format", "json")
	var v versionInfo
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.code != 0 {
		t.Fatalf("version --format json: exit %d, %v: %q", r.code, err, r.stdout)
	}
	if v != (versionInfo{version.String(), runtime.Version(), runtime.GOOS, runtime.GOARCH}) {
		t.Errorf("version --format json: %+v", v)
	}
	if r := cli("--version"); r.code != 0 || r.stdout != "netalias version "+version.String()+"\n" {
		t.Errorf("--version: exit %d, %q", r.code, r.stdout)
	}
}

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "__start_netalias",
		"zsh":  "#compdef netalias",
		"fish": "complete -c netalias",
	} {
		r := cli("completion", shell)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, want) {
			t.Errorf("completion %s: exit %d, stderr %q, want a script with %q", shell, r.code, r.stderr, want)
		}
	}
}

// The completion script asks the binary; the binary completes commands,
// flags and the networks of the state directory, changing nothing.
func TestCompletionOfNetworkNames(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(state.NetworksPath(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"alpha", "beta"} {
		if err := os.WriteFile(state.NetworkPath(dir, n), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := digest(t, dir)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"network", "rm", ""}, []string{"alpha", "beta"}},
		{[]string{"connect", ""}, []string{"alpha", "beta"}},
		{[]string{"connect", "alpha", ""}, nil}, // NETNS: not a network
		{[]string{"network", ""}, []string{"create", "inspect", "ls", "rm"}},
		// --state-dir is given; the cluster flags are global.
		{[]string{"network", "rm", "--"}, []string{"--etcd", "--etcd-ca", "--etcd-cert", "--etcd-key", "--etcd-prefix", "--force", "--help",
			"--host", "--lease-ttl", "--vtep", "--vxlan-port"}},
	} {
		r := cli(append([]string{"__complete", "--state-dir", dir}, tc.args...)...)
		var got []string
		for _, l := range strings.Split(r.stdout, "\n") {
			if l != "" && !strings.HasPrefix(l, ":") {
				name, _, _ := strings.Cut(l, "\t")
				got = append(got, name)
			}
		}
		slices.Sort(got)
		if r.code != 0 || !slices.Equal(got, tc.want) {
			t.Errorf("complete %q: exit %d, got %q, want %q", tc.args, r.code, got, tc.want)
		}
	}
	if !mapsEqual(digest(t, dir), before) {
		t.Errorf("completion changed the state directory")
	}
}

// Usage errors: exit status 2, one line naming the problem, nothing on
// stdout, the state directory untouched.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(state.NetworksPath(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state.NetworkPath(dir, "net"), []byte(`{"version":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	before := digest(t, dir)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate" (see 'netalias --help')`},
		{[]string{"network"}, "network: want create, ls, inspect or rm"},
		{[]string{"network", "frob"}, `network: unknown command "frob"`},
		{[]string{"netwrk", "ls"}, `unknown command "netwrk", did you mean "network"?`},
		{[]string{"network", "lss"}, `network: unknown command "lss", did you mean "ls"?`},
		{[]string{"help", "frobnicate"}, `help: unknown command "frobnicate"`},
		{[]string{"network", "create"}, "network create: want exactly one NAME"},
		{[]string{"network", "create", "a", "b"}, "network create: want exactly one NAME"},
		{[]string{"network", "create", "--mtu", "big", "x"}, `invalid argument "big" for "--mtu" flag`},
		{[]string{"network", "create", "x", "--subnet"}, "flag needs an argument: --subnet"},
		{[]string{"network", "ls", "x"}, `network ls: takes no arguments, got "x"`},
		{[]string{"network", "ls", "--format", "yaml"}, `network ls: unknown --format "yaml" (json)`},
		{[]string{"network", "inspect"}, "network inspect: want NAME..."},
		{[]string{"network", "inspect", "net", "--format", "table"}, `network inspect: unknown --format "table" (json)`},
		{[]string{"network", "rm"}, "network rm: want NAME..."},
		{[]string{"network", "rm", "net", "-x"}, "network rm: flag provided but not defined: -x"},
		{[]string{"connect", "net"}, "connect: want NETWORK NETNS"},
		{[]string{"connect", "net", "ns", "extra"}, "connect: want NETWORK NETNS"},
		{[]string{"connect", "net", "ns", "--bogus"}, "connect: flag provided but not defined: --bogus"},
		{[]string{"disconnect", "net"}, "disconnect: want NETWORK NETNS"},
		{[]string{"run", "--network", "net"}, "run: want -- CMD..."},
		{[]string{"run", "--network", "net", "sh", "--", "true"}, `run: unexpected "sh" before --`},
		{[]string{"events", "x"}, `events: takes no arguments, got "x"`},
		{[]string{"agent", "--interval", "0s"}, "agent: invalid --interval 0s: must be positive"},
		{[]string{"agent", "--interval", "soon"}, `invalid argument "soon" for "--interval" flag`},
		{[]string{"version", "--format", "xml"}, `version: unknown --format "xml" (json)`},
		{[]string{"completion"}, "completion: want one shell: bash, zsh or fish"},
		{[]string{"completion", "ksh"}, `completion: unknown shell "ksh"`},
		{[]string{"__exec", "resolv.conf"}, "__exec: want RESOLV -- CMD..."},
		{[]string{"__reap", "x"}, `__reap: takes no arguments, got "x"`},
	} {
		r := cli(append([]string{"--state-dir", dir}, tc.args...)...)
		lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
		if r.code != 2 || r.stdout != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "netalias: ") || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and one line \"netalias: …%s…\"", tc.args, r.code, r.stdout, r.stderr, tc.want)
		}
	}
	if !mapsEqual(digest(t, dir), before) {
		t.Errorf("a usage error changed the state directory")
	}
}

// No command at all: usage on stderr, exit status 2, as before cobra.
func TestNoCommand(t *testing.T) {
	r := cli()
	if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "Usage:") {
		t.Errorf("netalias: exit %d, stdout %q, stderr %q; want 2 and the usage on stderr", r.code, r.stdout, r.stderr)
	}
}

// parse finds the command of a command line and parses its flags, as
// Execute does, without running it.
func parse(t *testing.T, args ...string) (*cobra.Command, []string) {
	t.Helper()
	c, rest, err := newRoot().Find(args)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ParseFlags(rest); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	return c, c.Flags().Args()
}

func get(t *testing.T, c *cobra.Command, name string) string {
	t.Helper()
	f := c.Flags().Lookup(name)
	if f == nil {
		t.Fatalf("%s has no --%s", c.CommandPath(), name)
	}
	if v, ok := f.Value.(pflag.SliceValue); ok {
		return strings.Join(v.GetSlice(), ",")
	}
	return f.Value.String()
}

// Flags go before or after the positionals; docker's spellings and
// shorthands reach the same flag; "--" ends run's flags.
func TestFlagSyntax(t *testing.T) {
	for _, args := range [][]string{
		{"connect", "--name", "web", "--alias", "a", "net", "ns", "--alias", "b"},
		{"connect", "net", "ns", "--name=web", "--alias", "a", "--alias=b"},
		{"--state-dir", "/x", "connect", "net", "--alias", "a", "ns", "--name", "web", "--alias", "b"},
	} {
		c, pos := parse(t, args...)
		if c.Name() != "connect" || !slices.Equal(pos, []string{"net", "ns"}) || get(t, c, "name") != "web" || get(t, c, "alias") != "a,b" {
			t.Errorf("%q: %s %q name=%s alias=%s", args, c.Name(), pos, get(t, c, "name"), get(t, c, "alias"))
		}
	}
	c, pos := parse(t, "run", "--net", "a", "--network", "b", "--net=c", "--network-alias", "x", "--alias", "y", "--name", "n", "--", "ls", "-l", "--help", "--", "z")
	if got := get(t, c, "network"); got != "a,b,c" {
		t.Errorf("run --net/--network: %q, want a,b,c", got)
	}
	if got := get(t, c, "alias"); got != "x,y" {
		t.Errorf("run --network-alias/--alias: %q, want x,y", got)
	}
	if !slices.Equal(pos, []string{"ls", "-l", "--help", "--", "z"}) || c.ArgsLenAtDash() != 0 {
		t.Errorf("run argv: %q (dash at %d), want everything after the first --", pos, c.ArgsLenAtDash())
	}
	for _, args := range [][]string{{"network", "rm", "-f", "x"}, {"network", "rm", "x", "--force"}, {"network", "remove", "x", "-f"}} {
		if c, _ := parse(t, args...); get(t, c, "force") != "true" {
			t.Errorf("%q: force not set", args)
		}
	}
	if c, _ := parse(t, "network", "list", "-q"); c.Name() != "ls" || get(t, c, "quiet") != "true" {
		t.Errorf("network list -q: %s quiet=%s", c.Name(), get(t, c, "quiet"))
	}
}

// The state directory: the flag, else $NETALIAS_STATE_DIR. Completion
// lists it without touching anything, so it shows which one is used.
func TestStateDir(t *testing.T) {
	env, flagDir := t.TempDir(), t.TempDir()
	for d, n := range map[string]string{env: "fromenv", flagDir: "fromflag"} {
		if err := os.MkdirAll(state.NetworksPath(d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(state.NetworkPath(d, n), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(state.EnvDir, env)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "network", "rm", ""}, "fromenv\n"},
		{[]string{"__complete", "--state-dir", flagDir, "network", "rm", ""}, "fromflag\n"},
		{[]string{"__complete", "network", "rm", "--state-dir", flagDir, ""}, "fromflag\n"},
	} {
		if r := cli(tc.args...); r.code != 0 || !strings.HasPrefix(r.stdout, tc.want) {
			t.Errorf("%q: exit %d, %q; want %q", tc.args, r.code, r.stdout, tc.want)
		}
	}
}

func digest(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			out[p] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// The CLI sections of the READMEs name every command and flag the help
// shows, so the documents cannot fall behind the tree.
func TestReadmesNameEveryFlag(t *testing.T) {
	for _, doc := range []struct{ file, section string }{
		{"../../README.md", "## CLI\n"},
		{"../../agent/README.md", "## Command line\n"},
	} {
		b, err := os.ReadFile(doc.file)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		i := strings.Index(text, doc.section)
		if i < 0 {
			t.Fatalf("%s: no section %q", doc.file, doc.section)
		}
		text = text[i+len(doc.section):]
		if j := strings.Index(text, "\n## "); j >= 0 {
			text = text[:j]
		}
		root := newRoot()
		for _, c := range visible(root)[1:] {
			if !c.IsAvailableCommand() {
				continue
			}
			if p := strings.Join(path(c), " ") + " "; !strings.Contains(text, p) {
				t.Errorf("%s: CLI section lacks the command %q", doc.file, p)
			}
			c.NonInheritedFlags().VisitAll(func(f *pflag.Flag) {
				if f.Hidden || f.Name == "help" || f.Name == "version" {
					return
				}
				if !strings.Contains(text, "--"+f.Name) {
					t.Errorf("%s: CLI section lacks %s --%s", doc.file, c.CommandPath(), f.Name)
				}
			})
		}
		if !strings.Contains(text, "--state-dir") {
			t.Errorf("%s: CLI section lacks --state-dir", doc.file)
		}
	}
}

// The light build cannot import package cluster for its default prefix.
func TestDefaultEtcdPrefix(t *testing.T) {
	if defaultEtcdPrefix != cluster.DefaultPrefix {
		t.Errorf("defaultEtcdPrefix %q, cluster.DefaultPrefix %q", defaultEtcdPrefix, cluster.DefaultPrefix)
	}
}
