// Package netns names, opens, creates and deletes network namespaces the
// way `ip netns` does (bind mounts under /run/netns), without ever leaving
// a Go thread in a foreign namespace.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// RunDir is where named namespaces are bind-mounted (ip-netns(8)).
const RunDir = "/run/netns"

// Ref is a resolved namespace argument.
type Ref struct {
	Path string // file to open: /run/netns/NAME, /proc/PID/ns/net, or as given
	Name string // NAME when under /run/netns, else ""
}

// Resolve turns a user's NETNS argument (a name under /run/netns, a path,
// or a PID) into a Ref and checks that it is a network namespace.
func Resolve(arg string) (Ref, error) {
	var r Ref
	switch {
	case arg == "":
		return r, errors.New("namespace argument is empty")
	case isDigits(arg):
		r.Path = "/proc/" + arg + "/ns/net"
		if _, err := os.Stat("/proc/" + arg); err != nil {
			return r, fmt.Errorf("namespace %q: no process with PID %s", arg, arg)
		}
	case strings.Contains(arg, "/"):
		p, err := filepath.Abs(arg)
		if err != nil {
			return r, err
		}
		r.Path = p
		if filepath.Dir(p) == RunDir {
			r.Name = filepath.Base(p)
		}
	default:
		r.Path = filepath.Join(RunDir, arg)
		r.Name = arg
	}
	if err := check(r.Path); err != nil {
		return r, fmt.Errorf("namespace %q: %w", arg, err)
	}
	if isHost(r.Path) {
		return r, fmt.Errorf("namespace %q is the host's own network namespace: give a container's", arg)
	}
	return r, nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// check verifies that p is a network namespace file.
func check(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s does not exist", p)
		}
		return fmt.Errorf("open %s: %w", p, err)
	}
	defer unix.Close(fd)
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return err
	}
	if st.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("%s is not a namespace file", p)
	}
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err == nil && t != unix.CLONE_NEWNET {
		return fmt.Errorf("%s is not a network namespace", p)
	}
	return nil
}

// Create makes a new network namespace bind-mounted at /run/netns/name,
// like `ip netns add name`. It fails if the name exists.
func Create(name string) (string, error) {
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(RunDir, name)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("namespace %q already exists (%s)", name, p)
		}
		return "", fmt.Errorf("create %s: %w", p, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// This thread enters the new namespace and dies with the goroutine
		// (locked, never unlocked), so no other goroutine ever runs in it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, p, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mount namespace on %s: %w", p, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(p)
		return "", err
	}
	return p, nil
}

// Delete unmounts and removes /run/netns/name (`ip netns delete`).
func Delete(name string) error {
	p := filepath.Join(RunDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// StartTime returns field 22 of /proc/PID/stat (start time in clock ticks),
// or 0 if the process does not exist.
func StartTime(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// comm (field 2) may contain spaces: skip past its closing paren.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); start time is field 22.
	if len(fields) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(fields[19], 10, 64)
	return v
}

// Alive reports whether the process pid with the given start time exists.
func Alive(pid int, start uint64) bool {
	st := StartTime(pid)
	return st != 0 && st == start
}

// Same reports whether two paths name the same namespace (device and
// inode of the nsfs file), e.g. /run/netns/c1 and /proc/PID/ns/net of a
// process inside c1.
func Same(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// hostNS is this process's namespace at start-up. (Not /proc/self later:
// Create may leave the main thread, which /proc/self names, wedged in a
// new namespace when its locked goroutine ends there.)
var hostNS unix.Stat_t

func init() { unix.Stat("/proc/thread-self/ns/net", &hostNS) }

func isHost(p string) bool {
	var st unix.Stat_t
	if hostNS.Ino == 0 || unix.Stat(p, &st) != nil {
		return false
	}
	return st.Dev == hostNS.Dev && st.Ino == hostNS.Ino
}
