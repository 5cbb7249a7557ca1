package dockerdriver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/netalias/netalias/state"
)

// MapDir is the sub-directory of the state directory holding one map file
// per plugin name (DIR/docker/NAME.json). The agent's readers watch only
// DIR/networks, so nothing else reads it.
const MapDir = "docker"

// mapVersion is the map file's format version.
const mapVersion = 1

// MapPath returns the map file of plugin name in state directory dir.
func MapPath(dir, name string) string {
	return filepath.Join(dir, MapDir, name+".json")
}

// mapFile is the map file: Docker network ID → the netalias network it
// uses. One file per plugin name, so plugins with different names never
// write the same file.
type mapFile struct {
	Version  int                 `json:"version"`
	Networks map[string]*mapping `json:"networks"`
}

// mapping is one Docker network. Subnets and gateways are copied here so
// the IPAM side can find the network of a pool ID without asking the
// backend, and so a Join needs no backend call for its gateways.
type mapping struct {
	Network string `json:"network"`
	// Created is true when the plugin created the netalias network (then
	// DeleteNetwork removes it), false when it adopted an existing one
	// (then it is left as it was found).
	Created  bool         `json:"created"`
	Subnet   netip.Prefix `json:"subnet"`
	Gateway  netip.Addr   `json:"gateway"`
	Subnet6  netip.Prefix `json:"subnet6,omitzero"`
	Gateway6 netip.Addr   `json:"gateway6,omitzero"`
	Internal bool         `json:"internal"`
	Since    time.Time    `json:"since"`
}

// loadMap reads the map file at path; a missing file is an empty map. A
// corrupt file is an error naming it and is left untouched for an
// operator: starting with an empty map would forget what the plugin made.
func loadMap(path string) (map[string]*mapping, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]*mapping{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("docker network map: %w", err)
	}
	var f mapFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("docker network map %s is corrupt: %w", path, err)
	}
	if f.Version != mapVersion {
		return nil, fmt.Errorf("docker network map %s: unsupported version %d (want %d)", path, f.Version, mapVersion)
	}
	if f.Networks == nil {
		f.Networks = map[string]*mapping{}
	}
	for id, m := range f.Networks {
		if m == nil || m.Network == "" {
			return nil, fmt.Errorf("docker network map %s: Docker network %s has no netalias network", path, id)
		}
	}
	return f.Networks, nil
}

// saveMap replaces the map file atomically and durably: the map is the
// only record of which netalias networks the plugin made.
func saveMap(path string, nets map[string]*mapping) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("docker network map: %w", err)
	}
	data, err := json.MarshalIndent(mapFile{Version: mapVersion, Networks: nets}, "", "  ")
	if err != nil {
		return fmt.Errorf("docker network map: %w", err)
	}
	if err := state.WriteAtomic(path, append(data, '\n')); err != nil {
		return fmt.Errorf("docker network map %s: %w", path, err)
	}
	return nil
}
