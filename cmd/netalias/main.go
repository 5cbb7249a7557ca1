// Command netalias is the command line of the netalias agent: bridge
// networks and namespace attachment shaped like `docker network` and
// `docker run`. It only parses flags (cobra, as docker and podman do); the
// work is in package agent. One file per command group; root.go holds what
// they share.
package main

import "os"

func main() { os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
