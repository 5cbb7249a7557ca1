package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"

	"github.com/netalias/netalias/agent/names"
)

// endpointName picks the endpoint's name: K8S_POD_NAME when it is a DNS
// label, else the short container ID. A runtime's name that is no DNS
// label (Podman allows "_" and ".") costs a warning, never the ADD.
func endpointName(podName, containerID string, warn func(string, ...any)) string {
	if podName == "" {
		return shortID(containerID)
	}
	if err := names.Label("endpoint name", podName); err != nil {
		warn("K8S_POD_NAME %q is not a DNS label, using the short container ID %q instead: %v", podName, shortID(containerID), err)
		return shortID(containerID)
	}
	return podName
}

// shortID is the first 12 characters of the container ID, as Docker and
// Podman print it. IDs that are not hex (the spec allows letters, digits,
// "_", "." and "-") are made into a label: lower case, "-" for the rest.
func shortID(id string) string {
	if len(id) > 12 {
		id = id[:12]
	}
	b := []byte(strings.ToLower(id))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	s := strings.Trim(string(b), "-")
	if names.Label("endpoint name", s) != nil {
		h := sha256.Sum256([]byte(id))
		s = "cni-" + hex.EncodeToString(h[:4])
	}
	return s
}

// aliasList reads runtimeConfig.aliases: a list, or Podman's map from
// network name to list, read under the CNI network's name, else under the
// netalias network's. Invalid names are skipped with a warning; duplicates
// and the endpoint name itself are dropped.
func aliasList(raw json.RawMessage, cniName, network, endpoint string, warn func(string, ...any)) []string {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		var m map[string][]string
		if err := json.Unmarshal(raw, &m); err != nil {
			warn("runtimeConfig.aliases is neither a list of names nor a map of network name to names, ignoring it: %s", raw)
			return nil
		}
		var ok bool
		if list, ok = m[cniName]; !ok {
			list = m[network]
		}
	}
	seen := map[string]bool{strings.ToLower(endpoint): true}
	var out []string
	for _, a := range list {
		if err := names.DNSName("alias", a); err != nil {
			warn("skipping alias %q: %v", a, err)
			continue
		}
		if low := strings.ToLower(a); !seen[low] {
			seen[low] = true
			out = append(out, a)
		}
	}
	return out
}
