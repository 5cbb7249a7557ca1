// Command netalias is the command line of the netalias agent: bridge
// networks and namespace attachment shaped like `docker network` and
// `docker run`. It only parses flags; the work is in package agent.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

const usage = `usage: netalias [--state-dir DIR] COMMAND

Commands:
  network create [--subnet CIDR] [--gateway IP] [--ipv6] [--subnet6 CIDR] [--gateway6 IP] [--internal] [--mtu N] NAME
  network ls [--format json] [-q]
  network inspect [--format json] NAME...
  network rm [--force] NAME...
  connect NETWORK NETNS [--name N] [--alias A]... [--ip IP] [--ip6 IP] [--link C:A]...
  disconnect NETWORK NETNS
  run [--name N] [--network NET]... [--alias A]... [--link C:A]... -- CMD...
  events
  agent [--interval DURATION]

NETNS is a name under /run/netns, a path (/proc/PID/ns/net, a bind mount) or a PID.
The state directory defaults to $NETALIAS_STATE_DIR, then /var/lib/netalias.
`

// usageError exits with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "netalias: %s\n", oneLine(err))
		if errors.As(err, new(usageError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
	os.Exit(code)
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// parse parses flags anywhere among the positionals (docker style).
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func run(args []string) (int, error) {
	global := flag.NewFlagSet("netalias", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	stateDir := global.String("state-dir", "", "state directory")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Print(usage)
			return 0, nil
		}
		return 0, usageError{err.Error()}
	}
	args = global.Args()
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2, nil
	}
	dir := state.Dir(*stateDir)
	cmd, args := args[0], args[1:]
	switch cmd {
	case "__exec": // inside half of `run`: RESOLV -- ARGV...
		if len(args) < 2 || args[1] != "--" {
			return 0, usageError{"__exec: want RESOLV -- CMD..."}
		}
		return 0, netns.ExecWithResolver(args[0], args[2:])
	case "help", "--help", "-h":
		fmt.Print(usage)
		return 0, nil
	case "network":
		return 0, networkCmd(dir, args)
	case "connect":
		return 0, connectCmd(dir, args)
	case "disconnect":
		return 0, disconnectCmd(dir, args)
	case "run":
		return runCmd(dir, args)
	case "events":
		return 0, eventsCmd(dir, args)
	case "agent":
		return 0, agentCmd(dir, args)
	case "__reap":
		// Background work: leave the CPU to the commands users wait for.
		syscall.Setpriority(syscall.PRIO_PROCESS, 0, 10)
		m, err := agent.New(agent.Options{StateDir: dir, Emit: publisher(dir)})
		if err != nil {
			return 0, err
		}
		return 0, m.Reap()
	}
	return 0, usageError{fmt.Sprintf("unknown command %q (see netalias --help)", cmd)}
}

// publisher sends events to a listening agent, if any.
func publisher(dir string) func(events.Event) {
	sock := events.SocketPath(dir)
	return func(ev events.Event) { events.Publish(sock, ev) }
}

// spawnReaper starts a detached `netalias __reap` that deletes unplugged
// veths (each deletion waits for an RCU grace period) after this command
// has returned.
func spawnReaper(dir string) func() {
	return func() {
		if agent.ReaperRunning(dir) {
			return // it will pick our entry up before it exits
		}
		self, err := os.Executable()
		if err != nil {
			return
		}
		c := exec.Command(self, "--state-dir", dir, "__reap")
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := c.Start(); err == nil {
			c.Process.Release()
		}
	}
}

func manager(dir string) (*agent.Manager, error) {
	return agent.New(agent.Options{StateDir: dir, Emit: publisher(dir), Reap: spawnReaper(dir)})
}

func networkCmd(dir string, args []string) error {
	if len(args) == 0 {
		return usageError{"network: want create, ls, inspect or rm"}
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "create":
		fs := flag.NewFlagSet("network create", flag.ContinueOnError)
		var spec agent.NetworkSpec
		fs.StringVar(&spec.Subnet, "subnet", "", "")
		fs.StringVar(&spec.Gateway, "gateway", "", "")
		fs.BoolVar(&spec.IPv6, "ipv6", false, "")
		fs.StringVar(&spec.Subnet6, "subnet6", "", "")
		fs.StringVar(&spec.Gateway6, "gateway6", "", "")
		fs.BoolVar(&spec.Internal, "internal", false, "")
		fs.IntVar(&spec.MTU, "mtu", 0, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usageError{"network create: want exactly one NAME"}
		}
		spec.Name = pos[0]
		m, err := manager(dir)
		if err != nil {
			return err
		}
		n, err := m.CreateNetwork(spec)
		if err != nil {
			return err
		}
		fmt.Println(n.ID)
		return nil
	case "ls", "list":
		fs := flag.NewFlagSet("network ls", flag.ContinueOnError)
		format := fs.String("format", "", "")
		quiet := fs.Bool("q", false, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 0 {
			return usageError{"network ls: takes no arguments"}
		}
		return listNetworks(dir, *format, *quiet)
	case "inspect":
		fs := flag.NewFlagSet("network inspect", flag.ContinueOnError)
		format := fs.String("format", "json", "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) == 0 {
			return usageError{"network inspect: want NAME..."}
		}
		if *format != "json" {
			return usageError{fmt.Sprintf("network inspect: unknown --format %q (json)", *format)}
		}
		return inspectNetworks(dir, pos)
	case "rm", "remove":
		fs := flag.NewFlagSet("network rm", flag.ContinueOnError)
		force := fs.Bool("force", false, "")
		fs.BoolVar(force, "f", false, "")
		pos, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(pos) == 0 {
			return usageError{"network rm: want NAME..."}
		}
		m, err := manager(dir)
		if err != nil {
			return err
		}
		var errs []error
		for _, name := range pos {
			if err := m.RemoveNetwork(name, *force); err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Println(name)
		}
		return errors.Join(errs...)
	}
	return usageError{fmt.Sprintf("network: unknown command %q", sub)}
}

// reconcile lets read-only commands reclaim what died since the last
// command (as root; others just read).
func reconcile(m *agent.Manager) {
	if os.Geteuid() != 0 {
		return
	}
	if err := m.Reconcile(); err != nil {
		fmt.Fprintf(os.Stderr, "netalias: reconcile: %s\n", oneLine(err))
	}
}

// NetworkSummary is one line of `network ls --format json`.
type NetworkSummary struct {
	state.Network
	Endpoints int `json:"endpoints"`
}

// reconciledSnapshot reads the state of dir after a reconcile, so ls and
// inspect never show endpoints whose veth is gone.
func reconciledSnapshot(dir string) (*store.Snapshot, error) {
	m, err := manager(dir)
	if err != nil {
		return nil, err
	}
	reconcile(m)
	return m.Snapshot()
}

func listNetworks(dir, format string, quiet bool) error {
	snap, err := reconciledSnapshot(dir)
	if err != nil {
		return err
	}
	for _, c := range snap.Corrupt {
		fmt.Fprintf(os.Stderr, "netalias: %s (left untouched)\n", oneLine(c))
	}
	names := snap.Names()
	switch format {
	case "json":
		out := []NetworkSummary{}
		for _, n := range names {
			f := snap.Files[n]
			out = append(out, NetworkSummary{f.Network, len(f.Endpoints)})
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case "":
	default:
		return usageError{fmt.Sprintf("network ls: unknown --format %q (json)", format)}
	}
	if quiet {
		for _, n := range names {
			fmt.Println(snap.Files[n].Network.ID[:12])
		}
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NETWORK ID\tNAME\tBRIDGE\tSUBNET\tGATEWAY\tINTERNAL\tENDPOINTS")
	for _, name := range names {
		n := snap.Files[name].Network
		sub := n.Subnet.String()
		if n.Subnet6.IsValid() {
			sub += "," + n.Subnet6.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%d\n", n.ID[:12], n.Name, n.Bridge, sub, n.Gateway, n.Internal, len(snap.Files[name].Endpoints))
	}
	return tw.Flush()
}

func inspectNetworks(dir string, names []string) error {
	snap, err := reconciledSnapshot(dir)
	if err != nil {
		return err
	}
	out := []*state.File{}
	var errs []error
	for _, n := range names {
		f, ok := snap.Files[n]
		if !ok {
			if c := snap.CorruptFor(n); c != nil {
				errs = append(errs, c)
			} else {
				errs = append(errs, fmt.Errorf("network %q not found", n))
			}
			continue
		}
		if f.Endpoints == nil {
			f.Endpoints = []state.Endpoint{}
		}
		out = append(out, f)
	}
	if len(out) > 0 {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

func parseLinks(ls []string) ([]state.Link, error) {
	var out []state.Link
	for _, l := range ls {
		t, a, ok := strings.Cut(l, ":")
		if !ok {
			a = t // docker accepts --link NAME as NAME:NAME
		}
		if t == "" || a == "" {
			return nil, fmt.Errorf("invalid --link %q: want NAME:ALIAS", l)
		}
		out = append(out, state.Link{Target: t, Alias: a})
	}
	return out, nil
}

func connectCmd(dir string, args []string) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	var spec agent.ConnectSpec
	var aliases, links multi
	fs.StringVar(&spec.Name, "name", "", "")
	fs.Var(&aliases, "alias", "")
	fs.Var(&links, "link", "")
	fs.StringVar(&spec.IP, "ip", "", "")
	fs.StringVar(&spec.IP6, "ip6", "", "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageError{"connect: want NETWORK NETNS"}
	}
	spec.Network, spec.Netns, spec.Aliases = pos[0], pos[1], aliases
	if spec.Links, err = parseLinks(links); err != nil {
		return err
	}
	m, err := manager(dir)
	if err != nil {
		return err
	}
	_, err = m.Connect(spec)
	return err
}

func disconnectCmd(dir string, args []string) error {
	fs := flag.NewFlagSet("disconnect", flag.ContinueOnError)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageError{"disconnect: want NETWORK NETNS"}
	}
	m, err := manager(dir)
	if err != nil {
		return err
	}
	return m.Disconnect(pos[0], pos[1])
}

func runCmd(dir string, args []string) (int, error) {
	// Everything after "--" is the command, untouched.
	var argv []string
	for i, a := range args {
		if a == "--" {
			args, argv = args[:i], args[i+1:]
			break
		}
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var spec agent.RunSpec
	var nets, aliases, links multi
	fs.StringVar(&spec.Name, "name", "", "")
	fs.Var(&nets, "network", "")
	fs.Var(&nets, "net", "")
	fs.Var(&aliases, "alias", "")
	fs.Var(&aliases, "network-alias", "")
	fs.Var(&links, "link", "")
	pos, err := parse(fs, args)
	if err != nil {
		return 0, err
	}
	if argv == nil {
		argv = pos
	} else if len(pos) > 0 {
		return 0, usageError{fmt.Sprintf("run: unexpected %q before --", pos[0])}
	}
	if len(argv) == 0 {
		return 0, usageError{"run: want -- CMD..."}
	}
	spec.Networks, spec.Aliases, spec.Argv = nets, aliases, argv
	if spec.Links, err = parseLinks(links); err != nil {
		return 0, err
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	spec.Helper = []string{self, "__exec"}
	spec.Stdin, spec.Stdout, spec.Stderr = os.Stdin, os.Stdout, os.Stderr
	m, err := manager(dir)
	if err != nil {
		return 0, err
	}
	return m.Run(spec)
}

func eventsCmd(dir string, args []string) error {
	if len(args) != 0 {
		return usageError{"events: takes no arguments"}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	enc := json.NewEncoder(os.Stdout)
	return events.Subscribe(ctx, events.SocketPath(dir), func(ev events.Event) error { return enc.Encode(ev) })
}

func agentCmd(dir string, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	interval := fs.Duration("interval", 2*time.Second, "")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError{"agent: takes no arguments"}
	}
	d, err := agent.NewDaemon(agent.Options{StateDir: dir})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "netalias agent: state %s, events on %s\n", d.Manager().StateDir(), events.SocketPath(d.Manager().StateDir()))
	return d.Run(ctx, *interval)
}
