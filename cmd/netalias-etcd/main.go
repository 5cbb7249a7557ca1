// Command netalias-etcd runs one etcd member (go.etcd.io/etcd/server/v3
// embed) for netalias's demo and tests: one member for `make demo-cluster`,
// three for the three-host tests. It is its own binary so the etcd server
// never links into netalias or coredns; production points netalias at an
// external etcd cluster (≥ 3.6) instead.
//
//	netalias-etcd --name h1 --data-dir /tmp/h1.etcd \
//	    --client-url http://10.0.0.11:2379 --peer-url http://10.0.0.11:2380 \
//	    --initial-cluster h1=http://10.0.0.11:2380,h2=http://10.0.0.12:2380 \
//	    --initial-cluster-state new
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/netalias/netalias/internal/version"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "netalias-etcd: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("netalias-etcd", flag.ContinueOnError)
	name := fs.String("name", "default", "member name")
	dir := fs.String("data-dir", "", "data directory (required)")
	clientURL := fs.String("client-url", "http://127.0.0.1:2379", "client URL(s) to listen on and advertise, comma-separated")
	peerURL := fs.String("peer-url", "http://127.0.0.1:2380", "peer URL(s) to listen on and advertise, comma-separated")
	initial := fs.String("initial-cluster", "", "NAME=PEER-URL,… of every member (default: this member alone)")
	state := fs.String("initial-cluster-state", "new", "new, or existing to join a running cluster")
	noFsync := fs.Bool("unsafe-no-fsync", false, "skip fsync (faster, loses data on a machine crash; tests only)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Println("netalias-etcd", version.String())
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *dir == "" {
		return errors.New("--data-dir is required")
	}
	if *state != "new" && *state != "existing" {
		return fmt.Errorf("--initial-cluster-state %q: want new or existing", *state)
	}
	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dir
	cfg.LogLevel = *logLevel
	cfg.UnsafeNoFsync = *noFsync
	cu, err := urls("--client-url", *clientURL)
	if err != nil {
		return err
	}
	pu, err := urls("--peer-url", *peerURL)
	if err != nil {
		return err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = cu, cu
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = pu, pu
	cfg.InitialCluster = *initial
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	}
	cfg.ClusterState = *state
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("member %s: %w", *name, err)
	}
	defer e.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "netalias-etcd: member %s ready, clients on %s\n", *name, *clientURL)
	case err := <-e.Err():
		return fmt.Errorf("member %s: %w", *name, err)
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "netalias-etcd: %v before ready; stopping\n", s)
		return nil
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("member %s: not ready after 5 minutes (are the other members up?)", *name)
	}
	select {
	case err := <-e.Err():
		return fmt.Errorf("member %s: %w", *name, err)
	case <-sig:
		return nil
	}
}

func urls(flagName, s string) ([]url.URL, error) {
	var out []url.URL
	for _, p := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("%s: %q is not an http(s)://HOST:PORT URL", flagName, p)
		}
		out = append(out, *u)
	}
	return out, nil
}
