package agent

import "github.com/netalias/netalias/agent/link"

// Pairs is the kernel side of runtime-moved endpoints (the Docker driver):
// veth pairs made whole in the host namespace, whose peer the runtime
// moves in and renames, so that the agent only ever touches the host end.
type Pairs interface {
	CreatePair(link.Pair) error
	// UnplugHost takes the host end down, off its bridge and into the
	// reaper's link group.
	UnplugHost(hostName string, group uint32) error
}

type realPairs struct{}

func (realPairs) CreatePair(p link.Pair) error               { return link.CreatePair(p) }
func (realPairs) UnplugHost(host string, group uint32) error { return link.UnplugHost(host, group) }
