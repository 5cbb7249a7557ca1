package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	nversion "github.com/netalias/netalias/internal/version"
)

// Versions are the spec versions the plugin answers: 1.1.0, and older
// ones through the library's result conversion. CHECK needs 0.4.0 and
// GC/STATUS need 1.1.0 (the library refuses them below).
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Main runs the plugin for the CNI_* environment and stdin, prints the
// Result or the spec's error object on stdout, and exits non-zero on
// error. Warnings go to stderr. SIGINT/SIGTERM (a runtime giving up)
// cancel the context given to the backend.
func Main(open Open) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	p := &plugin{ctx: ctx, open: open, stdout: os.Stdout, stderr: os.Stderr}
	skel.PluginMainFuncs(p.funcs(), Versions, "CNI plugin netalias "+nversion.String())
}

// plugin holds one invocation's context and where it writes.
type plugin struct {
	ctx            context.Context
	open           Open
	stdout, stderr io.Writer
}

func (p *plugin) funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.add, Del: p.del, Check: p.check, GC: p.gc, Status: p.status}
}

func (p *plugin) warn(format string, a ...any) {
	fmt.Fprintf(p.stderr, "netalias: warning: "+format+"\n", a...)
}

// setup parses the configuration and opens the backend.
func (p *plugin) setup(cmd string, args *skel.CmdArgs) (*Config, Backend, error) {
	c, terr := ParseConfig(args.StdinData)
	if terr != nil {
		return nil, nil, terr
	}
	b, err := p.open(c.StateDir)
	if err != nil {
		if cmd == "STATUS" {
			return nil, nil, toCNIError(cmd, err)
		}
		var te *types.Error
		if errors.As(err, &te) {
			return nil, nil, te
		}
		return nil, nil, types.NewError(types.ErrIOFailure, fmt.Sprintf("netalias: state directory %s: %v", c.StateDir, err), "")
	}
	return c, b, nil
}

func (p *plugin) add(args *skel.CmdArgs) error {
	c, b, err := p.setup("ADD", args)
	if err != nil {
		return err
	}
	req, terr := p.addRequest(c, args)
	if terr != nil {
		return terr
	}
	var prev *types100.Result
	if c.PrevResult != nil {
		if prev, err = types100.NewResultFromResult(c.PrevResult); err != nil {
			return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("netalias: prevResult: %v", err), "")
		}
	}
	a, err := b.Add(p.ctx, req)
	if errors.Is(err, ErrNameInUse) && req.Name != shortID(req.ContainerID) {
		// Pod names repeat across Kubernetes namespaces: the ID does not.
		p.warn("endpoint name %q is taken on network %q, using the short container ID %q", req.Name, req.Network, shortID(req.ContainerID))
		req.Name = shortID(req.ContainerID)
		a, err = b.Add(p.ctx, req)
	}
	if err != nil {
		return toCNIError("ADD", err)
	}
	res := buildResult(a, args.Netns, prev)
	out, err := res.GetAsVersion(c.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("netalias: result as version %s: %v", c.CNIVersion, err), "")
	}
	return out.PrintTo(p.stdout)
}

// addRequest turns the configuration, CNI_ARGS and capability arguments
// into a request. Bad capability values are configuration errors (7), bad
// CNI_ARGS environment errors (4); bad names only warnings.
func (p *plugin) addRequest(c *Config, args *skel.CmdArgs) (AddRequest, *types.Error) {
	req := AddRequest{Network: c.Network, CNINetwork: c.Name, Key: Key{args.ContainerID, args.IfName}, Netns: args.Netns}
	ca, terr := parseArgs(args.Args)
	if terr != nil {
		return req, terr
	}
	req.Name = endpointName(ca.PodName, args.ContainerID, p.warn)
	if short := shortID(args.ContainerID); req.Name != short {
		req.Fallback = short
	}
	req.Aliases = aliasList(c.RuntimeConfig.Aliases, c.Name, c.Network, req.Name, p.warn)
	var err error
	if len(c.RuntimeConfig.IPs) > 0 {
		if req.IPv4, req.IPv6, err = staticAddrs("runtimeConfig.ips", c.RuntimeConfig.IPs); err != nil {
			return req, types.NewError(types.ErrInvalidNetworkConfig, "netalias: "+err.Error(), "")
		}
	} else if req.IPv4, req.IPv6, err = staticAddrs("CNI_ARGS IP", ca.IPs); err != nil {
		return req, types.NewError(types.ErrInvalidEnvironmentVariables, "netalias: "+err.Error(), "")
	}
	if c.RuntimeConfig.MAC != "" {
		if req.MAC, err = parseMAC("runtimeConfig.mac", c.RuntimeConfig.MAC); err != nil {
			return req, types.NewError(types.ErrInvalidNetworkConfig, "netalias: "+err.Error(), "")
		}
	} else if ca.MAC != "" {
		if req.MAC, err = parseMAC("CNI_ARGS MAC", ca.MAC); err != nil {
			return req, types.NewError(types.ErrInvalidEnvironmentVariables, "netalias: "+err.Error(), "")
		}
	}
	return req, nil
}

// del succeeds when the attachment or its whole network is already gone:
// runtimes call DEL again after failures and for IDs never added.
func (p *plugin) del(args *skel.CmdArgs) error {
	c, b, err := p.setup("DEL", args)
	if err != nil {
		return err
	}
	if _, terr := parseArgs(args.Args); terr != nil {
		return terr
	}
	err = b.Del(p.ctx, c.Network, Key{args.ContainerID, args.IfName}, args.Netns)
	if errors.Is(err, ErrUnknownNetwork) || errors.Is(err, ErrNotAttached) {
		return nil
	}
	return toCNIError("DEL", err)
}

// check asks the backend whether the attachment is whole, then whether
// prevResult still describes it. Without a prevResult (some runtimes
// forget it) only the backend's check runs.
func (p *plugin) check(args *skel.CmdArgs) error {
	c, b, err := p.setup("CHECK", args)
	if err != nil {
		return err
	}
	a, err := b.Check(p.ctx, c.Network, Key{args.ContainerID, args.IfName}, args.Netns)
	if err != nil {
		return toCNIError("CHECK", err)
	}
	if c.PrevResult == nil {
		return nil
	}
	prev, err := types100.NewResultFromResult(c.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("netalias: prevResult: %v", err), "")
	}
	return toCNIError("CHECK", compareWithPrev(prev, a, args.Netns))
}

// gc keeps the attachments listed under either key and removes the other
// CNI attachments of the network made through this CNI network. An absent
// list means none is valid (what libcni does with its own cache then).
func (p *plugin) gc(args *skel.CmdArgs) error {
	c, b, err := p.setup("GC", args)
	if err != nil {
		return err
	}
	err = b.GC(p.ctx, c.Network, c.Name, c.keep())
	if errors.Is(err, ErrUnknownNetwork) {
		return nil
	}
	return toCNIError("GC", err)
}

func (p *plugin) status(args *skel.CmdArgs) error {
	c, b, err := p.setup("STATUS", args)
	if err != nil {
		return err
	}
	return toCNIError("STATUS", b.Status(p.ctx, c.Network))
}
