package cni

import (
	"context"
	"errors"

	"github.com/containernetworking/cni/pkg/types"
)

// netalias's own error codes (the spec reserves 100 and up for plugins).
const (
	// CodeNoFreeAddress: the network's subnet has no free address left.
	// Not 11 (try again later): only a DEL frees one, a retry does not.
	CodeNoFreeAddress uint = 100
	// CodeAddressInUse: a static address asked for (ips, IP=) is taken.
	CodeAddressInUse uint = 101
	// CodeExists: the interface name exists in the namespace, the
	// attachment exists, or its endpoint name is taken.
	CodeExists uint = 102
	// CodeDamaged: CHECK found part of the attachment missing or different
	// from prevResult.
	CodeDamaged uint = 103
)

// Codes of the spec that the library does not name.
const (
	codeUnavailable uint = 50 // STATUS: cannot serve ADD
	codeDegraded    uint = 51 // STATUS: cannot serve ADD, existing attachments impaired
)

// toCNIError maps a backend error to the spec's error object (a
// *types.Error) for command cmd ("ADD", "STATUS", …); nil stays nil. The
// message is the error's text, which names the object.
func toCNIError(cmd string, err error) error {
	if err == nil {
		return nil // an untyped nil: a nil *types.Error would not be
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	msg := err.Error()
	if cmd == "STATUS" {
		if errors.Is(err, ErrDegraded) {
			return types.NewError(codeDegraded, msg, "")
		}
		// Whatever stops us from knowing that an ADD would work means it
		// may not: the runtime waits for 0.
		return types.NewError(codeUnavailable, msg, "")
	}
	code := types.ErrInternal
	switch {
	case errors.Is(err, ErrUnknownNetwork), errors.Is(err, ErrInvalid):
		code = types.ErrInvalidNetworkConfig
	case errors.Is(err, ErrNoFreeAddress):
		code = CodeNoFreeAddress
	case errors.Is(err, ErrAddressInUse):
		code = CodeAddressInUse
	case errors.Is(err, ErrExists), errors.Is(err, ErrNameInUse):
		code = CodeExists
	case errors.Is(err, ErrNetns):
		// The spec wants code 4's message to name the variable.
		code, msg = types.ErrInvalidEnvironmentVariables, "CNI_NETNS: "+msg
	case errors.Is(err, ErrNotAttached):
		code = types.ErrUnknownContainer
	case errors.Is(err, ErrDamaged):
		code = CodeDamaged
	case errors.Is(err, ErrStateIO):
		code = types.ErrIOFailure
	case errors.Is(err, ErrBusy), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = types.ErrTryAgainLater
	case errors.Is(err, ErrUnavailable):
		code = codeUnavailable
	case errors.Is(err, ErrDegraded):
		code = codeDegraded
	}
	return types.NewError(code, msg, "")
}
