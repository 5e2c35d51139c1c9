// Command peerproxy-peer shares this machine's connection as a peerproxy exit: one static
// binary, every option a flag and an environment variable (see peer-go/README.md).
//
// Exit codes: 0 stopped by a signal, 1 the API refused us (bad key, limit) or the state file
// cannot be written, 2 bad flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/peerproxy/peerproxy/peer-go/peer"
)

func main() {
	cfg, err := peer.ParseArgs(os.Args[1:], os.Getenv)
	if errors.Is(err, peer.ErrHelp) {
		fmt.Print(peer.Usage())
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "peerproxy-peer: %s\n\n%s", err, peer.Usage())
		os.Exit(2)
	}
	if cfg.NameWasRandom {
		fmt.Fprintf(os.Stderr, "[WARN] %s\n[WARN] this run's name: %s\n", peer.RandomNameWarning, cfg.Name)
	}
	if cfg.AllowPrivate {
		fmt.Fprintln(os.Stderr, "[WARN] private/loopback targets allowed (-allow-private): development only")
	}

	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithCancel(context.Background())
	p := peer.New(cfg, os.Stdout)
	started := make(chan error, 1)
	go func() { started <- p.Start(ctx) }()

	select {
	case err := <-started:
		if err != nil {
			var rejected *peer.RejectedError
			if errors.As(err, &rejected) && rejected.Status != 0 {
				fmt.Fprintf(os.Stderr, "peerproxy-peer: registration refused (HTTP %d): %s\n", rejected.Status, err)
			} else {
				fmt.Fprintf(os.Stderr, "peerproxy-peer: cannot start: %s\n", err)
			}
			os.Exit(1)
		}
	case sig := <-signals:
		fmt.Printf("[SIGNAL] %s: stopping before registration finished\n", signalName(sig))
		cancel()
		<-started
		return
	}
	sig := <-signals
	fmt.Printf("[SIGNAL] %s: closing sockets\n", signalName(sig))
	go func() {
		// A second signal does not wait for the relay's close answers.
		<-signals
		os.Exit(130)
	}()
	cancel()
	p.Stop()
}

// signalName prints SIGTERM/SIGINT as the TS peer does (Go's String() says "terminated").
func signalName(sig os.Signal) string {
	if sig == syscall.SIGTERM {
		return "SIGTERM"
	}
	if sig == os.Interrupt {
		return "SIGINT"
	}
	return sig.String()
}
