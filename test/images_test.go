package test

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// busyboxImage imports a minimal image into engine ("docker" or "podman")
// without any registry: a rootfs tarball holding /bin/busybox (static) and a
// symlink per applet (sh, ping, nslookup, sleep, cat, ...). It returns the
// image reference, unique to the caller, and removes the image in
// t.Cleanup. Import needs no runtime, so the plain CLI does for Podman too;
// running the image with Podman here needs runc (see podmanEngine).
func busyboxImage(t testing.TB, engine string) string {
	t.Helper()
	requireBusybox(t)
	tarball := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := writeBusyboxRootfs(tarball); err != nil {
		t.Fatalf("busybox rootfs: %v", err)
	}
	ref := "localhost/" + natestName("natest-bb") + ":latest"
	out, err := exec.Command(engine, "import", "--change", `CMD ["sh"]`, tarball, ref).CombinedOutput()
	if err != nil {
		t.Fatalf("%s import: %v\n%s", engine, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(engine, "rmi", "-f", ref).CombinedOutput(); err != nil {
			t.Logf("%s rmi %s: %v\n%s", engine, ref, err, out)
		}
	})
	return ref
}

// busyboxPath is the static busybox the images are made of (Debian's
// busybox-static).
const busyboxPath = "/bin/busybox"

// requireBusybox skips (or, in CI, fails) unless a static busybox exists.
func requireBusybox(t testing.TB) {
	t.Helper()
	out, err := exec.Command(busyboxPath, "--list").Output()
	if err == nil && len(out) > 0 {
		return
	}
	if os.Getenv("NETALIAS_REQUIRE_ROOT") == "1" {
		t.Fatalf("test needs a static busybox at %s (Debian busybox-static); .ci/run should have installed it", busyboxPath)
	}
	t.Skipf("test needs a static busybox at %s (Debian busybox-static)", busyboxPath)
}

// writeBusyboxRootfs writes a tarball of a root filesystem made of busybox
// and its applets, plus the empty directories runtimes mount over.
func writeBusyboxRootfs(path string) error {
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		return err
	}
	list, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "run"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: now}); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: now}); err != nil {
		return err
	}
	if _, err := tw.Write(bin); err != nil {
		return err
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: now}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// natestName returns prefix-XXXXXXXX with a random suffix, so names made by
// concurrent test runs never collide.
func natestName(prefix string) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + "-" + hex.EncodeToString(b)
}
