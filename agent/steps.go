package agent

import (
	"errors"
	"fmt"
	"log/slog"
)

// txn runs an operation as named steps, each with its undo (libnetwork's
// step queue, CNI's `defer if !success`). On failure the undos of the
// steps that completed run in reverse order; an undo that fails is logged
// with what it left behind and joined to the returned error, never
// dropped.
type txn struct {
	op    string // "connect web to n1": names the operation in logs
	log   *slog.Logger
	undos []undoStep
}

type undoStep struct {
	name string
	undo func() error
}

func newTxn(log *slog.Logger, op string) *txn { return &txn{op: op, log: log} }

// step runs do; when it succeeds, undo (nil: nothing to undo) is queued.
func (t *txn) step(name string, do func() error, undo func() error) error {
	if err := do(); err != nil {
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
