package agent

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"strings"

	"github.com/netalias/netalias/cni"
)

// CNIBackend serves the CNI plugin (cni.Backend) from a Manager: the
// runtime attachments of attach.go, with the agent's errors wrapped in
// the cni package's sentinels so the plugin answers with the spec's codes.
type CNIBackend struct{ M *Manager }

var _ cni.Backend = CNIBackend{}

// OpenCNI returns the plugin's Open: a Manager on the configuration's
// state directory, made with o (o.StateDir is replaced).
func OpenCNI(o Options) cni.Open {
	return func(dir string) (cni.Backend, error) {
		o.StateDir = dir
		m, err := New(o)
		if err != nil {
			return nil, err
		}
		return CNIBackend{m}, nil
	}
}

func (b CNIBackend) Add(ctx context.Context, req cni.AddRequest) (*cni.Attachment, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a, err := b.M.Attach(AttachSpec{
		Network: req.Network, CNINetwork: req.CNINetwork, ContainerID: req.ContainerID, IfName: req.IfName,
		Netns: req.Netns, Name: req.Name, Fallback: req.Fallback, Aliases: req.Aliases, IPv4: req.IPv4, IPv6: req.IPv6, MAC: req.MAC,
	})
	if err != nil {
		return nil, b.cniError(err)
	}
	return toCNIAttachment(a), nil
}

func (b CNIBackend) Del(ctx context.Context, network string, key cni.Key, _ string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.cniError(b.M.Detach(network, key.ContainerID, key.IfName))
}

func (b CNIBackend) Check(ctx context.Context, network string, key cni.Key, _ string) (*cni.Attachment, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a, err := b.M.CheckAttachment(network, key.ContainerID, key.IfName)
	if err != nil {
		return nil, b.cniError(err)
	}
	return toCNIAttachment(a), nil
}

func (b CNIBackend) GC(ctx context.Context, network, cniNetwork string, keep []cni.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	valid := make(map[cni.Key]bool, len(keep))
	for _, k := range keep {
		valid[k] = true
	}
	return b.cniError(b.M.GCAttachments(network, cniNetwork, func(id, ifname string) bool { return valid[cni.Key{ContainerID: id, IfName: ifname}] }))
}

func (b CNIBackend) Status(ctx context.Context, network string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.cniError(b.M.AttachStatus(network))
}

func toCNIAttachment(a *Attached) *cni.Attachment {
	n, ep := a.Network, a.Endpoint
	out := &cni.Attachment{Network: n.Name, HostVeth: ep.HostVeth, IfName: ep.IfName, MTU: n.MTU,
		Gateway4: n.Gateway, Gateway6: n.Gateway6, DefaultRoute: a.DefaultRoute}
	out.MAC, _ = net.ParseMAC(ep.MAC)
	for _, p := range epPrefixes(n, ep) {
		if p.Addr().Is4() {
			out.IPv4 = p
		} else {
			out.IPv6 = p
		}
	}
	return out
}

// kinds maps the agent's errors to the plugin's sentinels.
var kinds = []struct{ agent, cni error }{
	{ErrNotFound, cni.ErrUnknownNetwork},
	{ErrNoFreeAddress, cni.ErrNoFreeAddress},
	{ErrAddressTaken, cni.ErrAddressInUse},
	{ErrNameTaken, cni.ErrNameInUse},
	{ErrAttachmentExists, cni.ErrExists},
	{ErrBadRequest, cni.ErrInvalid},
	{ErrBadNetns, cni.ErrNetns},
	{ErrNotAttached, cni.ErrNotAttached},
	{ErrAttachmentDamaged, cni.ErrDamaged},
	{ErrNetworkDegraded, cni.ErrDegraded},
	{ErrCannotAttach, cni.ErrUnavailable},
}

// kindError keeps the agent's message and adds the plugin's sentinel.
type kindError struct{ err, kind error }

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.err, e.kind} }

func cniError(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range kinds {
		if errors.Is(err, k.agent) {
			return kindError{err, k.cni}
		}
	}
	return err
}

// cniError is cniError, plus ErrStateIO for a failed read or write of a
// file under the state directory (code 5, not the catch-all 999).
func (b CNIBackend) cniError(err error) error {
	err = cniError(err)
	var pe *fs.PathError
	if err != nil && !errors.As(err, new(kindError)) && errors.As(err, &pe) && strings.HasPrefix(pe.Path, b.M.StateDir()) {
		return kindError{err, cni.ErrStateIO}
	}
	return err
}
