// Package dockerdriver serves Docker's legacy plugin protocol for a
// netalias network driver and IPAM driver on one unix socket
// (/run/docker/plugins/NAME.sock), so that
//
//	docker network create -d netalias --ipam-driver netalias [-o netalias.network=NAME] testnet
//
// puts Docker containers on a netalias network. The package speaks the
// protocol (the request and response types of Docker's own remote-driver
// packages, v28.5.2) and keeps the Docker-ID map; a Backend (the agent)
// does everything netalias records and everything in the kernel. See
// README.md for the decisions.
package dockerdriver
