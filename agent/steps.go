package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
)

// txn runs an operation as named steps, each with its undo (libnetwork's
// step queue, CNI's `defer if !success`). On failure the undos of the
// steps that completed run in reverse order; an undo that fails is logged
// with what it left behind and joined to the returned error, never
// dropped.
type txn struct {
	kind  string // "connect": the operation's crash-point prefix (Steps)
	op    string // "connect web to n1": names the operation in logs
	log   *slog.Logger
	undos []undoStep
}

type undoStep struct {
	name string
	undo func() error
}

func newTxn(log *slog.Logger, kind, op string) *txn { return &txn{kind: kind, op: op, log: log} }

// step runs do; when it succeeds, undo (nil: nothing to undo) is queued.
func (t *txn) step(name string, do func() error, undo func() error) error {
	if err := point(t.kind, name, do); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if undo != nil {
		t.undos = append(t.undos, undoStep{name, undo})
	}
	return nil
}

// rollback undoes the completed steps, newest first, and returns cause
// joined with every undo failure.
func (t *txn) rollback(cause error) error {
	errs := []error{cause}
	for i := len(t.undos) - 1; i >= 0; i-- {
		u := t.undos[i]
		if err := u.undo(); err != nil {
			t.log.Error("undo failed: left behind", "op", t.op, "step", u.name, "cause", cause, "err", err)
			errs = append(errs, fmt.Errorf("undo %s: %w", u.name, err))
		}
	}
	t.undos = nil
	return errors.Join(errs...)
}

// Steps lists every named step of every operation as "OP:STEP", in the
// order they run. point refuses a step missing here, so the crash tests,
// which read this list (`netalias __steps`), cover every step there is.
var Steps = []string{
	"connect:intent", "connect:attach", "connect:commit", "connect:resolver",
	"disconnect:state", "disconnect:unplug", "disconnect:resolver", "disconnect:routes",
	"network-create:state", "network-create:bridge", "network-create:firewall", "network-create:forwarding", "network-create:commit",
	"network-rm:mark", "network-rm:firewall", "network-rm:bridge", "network-rm:pending", "network-rm:state",
	"run:netns", "run:connect", "run:start", "run:cleanup",
	// The runtime fronts: CNI ADD (attach.go), Docker CreateEndpoint (docker.go).
	"attach:intent", "attach:attach", "attach:commit",
	"docker-endpoint:intent", "docker-endpoint:pair", "docker-endpoint:commit",
}

var knownSteps = func() map[string]bool {
	m := map[string]bool{}
	for _, s := range Steps {
		m[s] = true
	}
	return m
}()

// EnvCrashAt names a crash point for the crash tests: "OP:STEP:before" or
// "OP:STEP:after" (OP:STEP from Steps). The process SIGKILLs itself there.
// It is read once at start and removed from the environment, so no child
// (the reaper, `run`'s command) inherits it.
const EnvCrashAt = "NETALIAS_CRASH_AT"

var crashAt = takeCrashAt()

// CrashPoint is the crash point this process started with ("" for none):
// a process that hands its command to another binary passes it on.
func CrashPoint() string { return crashAt }

func takeCrashAt() string {
	v := os.Getenv(EnvCrashAt)
	if v != "" {
		os.Unsetenv(EnvCrashAt)
	}
	return v
}

// stepHook, when set (tests), sees every crash point ("OP:STEP", "before"
// or "after") as it is reached; a panic there stands in for a kill.
var stepHook func(step, pos string)

// point runs step STEP of operation OP: the crash points before and after
// it, and do between them.
func point(op, step string, do func() error) error {
	name := op + ":" + step
	if !knownSteps[name] {
		panic("agent: step " + name + " is missing from Steps")
	}
	crash(name, "before")
	if err := do(); err != nil {
		return err
	}
	crash(name, "after")
	return nil
}

func crash(step, pos string) {
	if stepHook != nil {
		stepHook(step, pos)
	}
	if crashAt != "" && crashAt == step+":"+pos {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns: the signal is on its way
	}
}
