// Command netalias is the command line of the netalias agent: bridge
// networks and namespace attachment shaped like `docker network` and
// `docker run`. It only parses flags (cobra, as docker and podman do); the
// work is in package agent. One file per command group; root.go holds what
// they share. Run with CNI_COMMAND set and no arguments, it is the CNI
// plugin (cni.go).
package main

import "os"

func main() {
	if pluginMode(os.Args[1:]) {
		runPlugin() // the CNI plugin of type "netalias" (cni.go)
		return
	}
	os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
