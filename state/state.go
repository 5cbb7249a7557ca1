// Package state is the on-disk contract between the netalias agent (the only
// writer) and everything that reads what the agent made: the DNS server's
// netwatch source, tooling, operators with jq.
//
// Layout of a state directory (default /var/lib/netalias):
//
//	DIR/lock                 flock(2) taken by every mutating agent command
//	DIR/networks/NAME.json   one file per network: the network and its endpoints
//	DIR/reap.lock            held by the one background veth reaper at work
//	DIR/agent.sock           `netalias agent`'s event socket (JSON lines)
//
// A network file is replaced atomically (temp file in the same directory,
// fsync, rename, fsync of the directory), so a reader never sees a torn file.
// Readers should watch DIR/networks (not the files: rename drops a file watch)
// and ignore names that do not end in ".json" (temp files start with ".").
//
// The format is versioned by the Version field; readers refuse versions they
// do not know. Field names are stable: they are the JSON keys below.
package state

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Version is the format version this package reads and writes.
const Version = 1

// DefaultDir is where the agent keeps its state unless told otherwise.
const DefaultDir = "/var/lib/netalias"

// EnvDir names the environment variable that overrides DefaultDir.
const EnvDir = "NETALIAS_STATE_DIR"

// NetworksDir is the sub-directory holding one file per network.
const NetworksDir = "networks"

// FileSuffix ends every network file name.
const FileSuffix = ".json"

// File is the content of one network file.
type File struct {
	Version   int        `json:"version"`
	Network   Network    `json:"network"`
	Endpoints []Endpoint `json:"endpoints"`
	// Leases remembers the last addresses an endpoint name held on this
	// network, so a container that reconnects under the same name gets them
	// back (sticky addresses). Keyed by endpoint name.
	Leases map[string]Lease `json:"leases,omitempty"`
	// PendingDelete lists host-side veths already unplugged from the bridge
	// (no address, no endpoint) whose kernel deletion is still running in
	// the background; the agent finishes any left behind. Readers ignore it.
	PendingDelete []PendingVeth `json:"pending_delete,omitempty"`
	// Op marks a network operation in progress: OpCreating from the
	// first write of `network create` until its last step, OpRemoving
	// from the start of `network rm` until the file goes. Found by a
	// later command holding the lock, it means that command died midway:
	// the next reconcile finishes it. Readers ignore it.
	Op string `json:"op,omitempty"`
}

// File.Op values.
const (
	OpCreating = "creating"
	OpRemoving = "removing"
)

// PendingVeth is a host-side veth awaiting deletion.
type PendingVeth struct {
	Name  string    `json:"name"`
	Since time.Time `json:"since"`
	// Creating marks the intent record of a connect in progress (written
	// before the veth exists, replaced by the endpoint when it succeeds).
	// Found by a later command holding the lock, it means the connect died
	// midway: the veth is deleted at once.
	Creating bool `json:"creating,omitempty"`
	// Container is the namespace the veth's peer is (or was) in, so a
	// reconcile that finishes an interrupted disconnect can refresh its
	// resolver file. Empty in older files.
	Container string `json:"container,omitempty"`
}

// Owner is the process that owns an endpoint's namespace (netalias run):
// when it is gone, the endpoint and the namespace are reclaimed. StartTime
// (field 22 of /proc/PID/stat) guards against PID reuse.
type Owner struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

// Network is a bridge network.
type Network struct {
	ID       string       `json:"id"`
	Name     string       `json:"name"`
	Bridge   string       `json:"bridge"`
	Subnet   netip.Prefix `json:"subnet"`           // CIDR, e.g. 172.20.0.0/16
	Gateway  netip.Addr   `json:"gateway"`          // address on the bridge
	Subnet6  netip.Prefix `json:"subnet6,omitzero"` // zero unless dual-stack
	Gateway6 netip.Addr   `json:"gateway6,omitzero"`
	Internal bool         `json:"internal"`
	MTU      int          `json:"mtu"`
	Created  time.Time    `json:"created"`
	// Cluster is set on networks shared across hosts through etcd
	// (cluster mode); absent on single-host networks.
	Cluster *Cluster `json:"cluster,omitempty"`
}

// Cluster is what a host keeps locally about a cluster network, so that it
// still attaches containers when etcd is unreachable: the VXLAN identity
// and the address blocks this host holds (claimed by compare-and-swap in
// etcd; the first address of the first block is this host's gateway).
type Cluster struct {
	VNI    uint32         `json:"vni"`
	Port   int            `json:"port,omitempty"` // VXLAN UDP port; 0: 4789
	Blocks []netip.Prefix `json:"blocks,omitempty"`
}

// Endpoint is one container's attachment to a network.
type Endpoint struct {
	ID       string     `json:"id"`
	Name     string     `json:"name"` // DNS label: resolves as NAME.NETWORK
	Aliases  []string   `json:"aliases,omitempty"`
	Links    []Link     `json:"links,omitempty"`
	IPv4     netip.Addr `json:"ipv4,omitzero"` // address without prefix
	IPv6     netip.Addr `json:"ipv6,omitzero"`
	MAC      string     `json:"mac"`
	HostVeth string     `json:"host_veth"` // host-side veth name, on the bridge
	IfName   string     `json:"ifname"`    // interface name inside the namespace
	Netns    string     `json:"netns"`     // path of the namespace, e.g. /run/netns/c1
	// Container identifies the container across networks: endpoints with
	// the same Container value belong to one container (its namespace).
	Container string    `json:"container"`
	Created   time.Time `json:"created"`
	// Owner is set for namespaces made by `netalias run`.
	Owner *Owner `json:"owner,omitempty"`
	// Attachment is set for endpoints a container runtime asked for
	// (the CNI plugin, the Docker driver) rather than connect or run.
	Attachment *Attachment `json:"attachment,omitempty"`
}

// Runtimes that attach endpoints through a front of the agent.
const (
	RuntimeCNI    = "cni"
	RuntimeDocker = "docker"
)

// Attachment identifies a runtime's endpoint. CNI keys attachments by
// container ID and interface name (Endpoint.IfName), scoped to the
// runtime's network name for GC; Docker's driver by its endpoint ID.
// Docker endpoints carry no name: Docker does not tell drivers container
// names, which reach the DNS server through the Docker source instead.
type Attachment struct {
	Runtime string `json:"runtime"` // RuntimeCNI or RuntimeDocker
	// ID is the CNI container ID or the Docker endpoint ID.
	ID string `json:"id"`
	// Network is the runtime's name or ID for the network: the CNI
	// network name (GC is scoped to it) or the Docker network ID.
	Network string `json:"network,omitempty"`
}

// Link is a legacy --link: Alias resolves to endpoint Target for the
// linking endpoint only.
type Link struct {
	Target string `json:"target"`
	Alias  string `json:"alias"`
}

// Lease is a remembered address pair.
type Lease struct {
	IPv4 netip.Addr `json:"ipv4,omitzero"`
	IPv6 netip.Addr `json:"ipv6,omitzero"`
}

// NetworksPath returns DIR/networks.
func NetworksPath(dir string) string { return filepath.Join(dir, NetworksDir) }

// NetworkPath returns the file of network name in dir.
func NetworkPath(dir, name string) string {
	return filepath.Join(NetworksPath(dir), name+FileSuffix)
}

// IsTemp reports whether base is the name of an atomic write's temp file
// (".NAME.json.tmp-*"): one that a killed writer left behind unless a
// writer holding the state lock is using it.
func IsTemp(base string) bool {
	return strings.HasPrefix(base, ".") && strings.Contains(base, FileSuffix+".tmp-")
}

// NetworkNameFromPath returns the network name of a network file path, or
// "" when the path is not a network file (temp files, other names).
func NetworkNameFromPath(p string) string {
	base := filepath.Base(p)
	if strings.HasPrefix(base, ".") || !strings.HasSuffix(base, FileSuffix) {
		return ""
	}
	return strings.TrimSuffix(base, FileSuffix)
}

// Dir resolves the state directory: flag value, then $NETALIAS_STATE_DIR,
// then DefaultDir.
func Dir(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := os.Getenv(EnvDir); v != "" {
		return v
	}
	return DefaultDir
}

// CorruptError reports a network file that cannot be used. The file is left
// as it is for an operator to inspect.
type CorruptError struct {
	Path string
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt state file %s: %v", e.Path, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Decode parses and validates a network file's bytes. path is used in errors.
func Decode(path string, data []byte) (*File, error) {
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, &CorruptError{Path: path, Err: err}
	}
	if err := f.Validate(); err != nil {
		return nil, &CorruptError{Path: path, Err: err}
	}
	return &f, nil
}

// Read reads and validates one network file.
func Read(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Decode(path, data)
}

// Validate checks what a reader relies on: the version, the IDs (64 hex
// digits, as NewID makes), the network's name, that the subnets, gateways
// and endpoint addresses are of their family and inside their subnet.
// Addresses were parsed when the file was decoded.
func (f *File) Validate() error {
	if f.Version != Version {
		return fmt.Errorf("unsupported version %d (want %d)", f.Version, Version)
	}
	n := &f.Network
	if n.Name == "" {
		return errors.New("network has no name")
	}
	if err := ValidID(n.ID); err != nil {
		return fmt.Errorf("network %q: %w", n.Name, err)
	}
	if !n.Subnet.IsValid() || !n.Subnet.Addr().Is4() {
		return fmt.Errorf("network %q: subnet %q is not an IPv4 CIDR", n.Name, n.Subnet)
	}
	if n.Gateway.IsValid() && !n.Subnet.Contains(n.Gateway) {
		return fmt.Errorf("network %q: gateway %s is outside subnet %s", n.Name, n.Gateway, n.Subnet)
	}
	if n.Subnet6.IsValid() && n.Subnet6.Addr().Is4() {
		return fmt.Errorf("network %q: subnet6 %s is not an IPv6 CIDR", n.Name, n.Subnet6)
	}
	if n.Gateway6.IsValid() && !n.Subnet6.Contains(n.Gateway6) {
		return fmt.Errorf("network %q: gateway6 %s is outside subnet6 %s", n.Name, n.Gateway6, n.Subnet6)
	}
	for _, ep := range f.Endpoints {
		if a := ep.Attachment; a != nil && a.Runtime != RuntimeCNI && a.Runtime != RuntimeDocker {
			return fmt.Errorf("network %q: endpoint %q: unknown runtime %q", n.Name, ep.ID, a.Runtime)
		}
		if ep.Name == "" && (ep.Attachment == nil || ep.Attachment.Runtime != RuntimeDocker) {
			return fmt.Errorf("network %q: endpoint %q has no name", n.Name, ep.ID)
		}
		if err := ValidID(ep.ID); err != nil {
			return fmt.Errorf("network %q: endpoint %q: %w", n.Name, ep.Name, err)
		}
		if ep.IPv4.IsValid() && !n.Subnet.Contains(ep.IPv4) {
			return fmt.Errorf("network %q: endpoint %q: ipv4 %s is outside subnet %s", n.Name, ep.Name, ep.IPv4, n.Subnet)
		}
		if ep.IPv6.IsValid() && !n.Subnet6.Contains(ep.IPv6) {
			return fmt.Errorf("network %q: endpoint %q: ipv6 %s is outside subnet6 %v", n.Name, ep.Name, ep.IPv6, n.Subnet6)
		}
	}
	return nil
}

// IDLen is the length of network and endpoint IDs: 32 random bytes in hex.
const IDLen = 64

// NewID returns a fresh random ID (IDLen lowercase hex digits).
func NewID() string {
	var b [IDLen / 2]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidID checks that id looks like NewID made it: names derived from it
// (bridge, veths) take its first 12 digits.
func ValidID(id string) error {
	if len(id) != IDLen {
		return fmt.Errorf("id %q is %d characters long, want %d hex digits", id, len(id), IDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("id %q has %q at %d: want lowercase hex digits", id, c, i)
		}
	}
	return nil
}

// Encode returns the canonical bytes of f (indented JSON, trailing newline).
func Encode(f *File) ([]byte, error) {
	f.Version = Version
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// WriteAtomic replaces path with data: temp file in the same directory,
// fsync, rename, fsync of the directory. A crash leaves either the old or the
// new file, never a torn one.
func WriteAtomic(path string, data []byte) error {
	return writeAtomic(path, data, true)
}

// WriteAtomicNoSync is WriteAtomic without the fsyncs: readers still never
// see a torn file and a killed process loses nothing, but a machine crash
// may lose the write. For records about kernel objects that a machine
// crash destroys anyway (the agent's intent records).
func WriteAtomicNoSync(path string, data []byte) error {
	return writeAtomic(path, data, false)
}

func writeAtomic(path string, data []byte, durable bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if durable {
		if err := tmp.Sync(); err != nil {
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmpName, path); err != nil {
		return err
	}
	ok = true
	if !durable {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Write encodes f and writes it atomically to its place in dir.
func Write(dir string, f *File) error {
	return write(dir, f, WriteAtomic)
}

// WriteNoSync is Write with WriteAtomicNoSync.
func WriteNoSync(dir string, f *File) error {
	return write(dir, f, WriteAtomicNoSync)
}

func write(dir string, f *File, w func(string, []byte) error) error {
	if err := os.MkdirAll(NetworksPath(dir), 0o755); err != nil {
		return err
	}
	data, err := Encode(f)
	if err != nil {
		return err
	}
	return w(NetworkPath(dir, f.Network.Name), data)
}
