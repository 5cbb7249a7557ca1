// Package cni is netalias's CNI plugin: the protocol side (configuration,
// CNI_ARGS and capability arguments, names, the Result, error codes) over
// a Backend that does the work (the agent). Main is the whole plugin;
// Conflist writes a ready conflist for a network. README.md gives the
// decisions and the error codes.
package cni
