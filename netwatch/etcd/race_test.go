//go:build race

package etcd

// raceEnabled: timings under the race detector mean nothing.
const raceEnabled = true
