// Package version is netalias's version, shared by the CLI and the CoreDNS
// build. Release builds set it with
// -ldflags "-X github.com/netalias/netalias/internal/version.Version=…".
package version

import "runtime/debug"

// Version is set at link time; otherwise it comes from the build info.
var Version = ""

// String returns the version: the link-time value, else the VCS revision
// the binary was built from, else "dev".
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			if dirty {
				rev += "-dirty"
			}
			return "dev-" + rev
		}
	}
	return "dev"
}
