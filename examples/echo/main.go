// Command echo runs the wsproxy echo backend (package echoserver) until it
// receives SIGINT or SIGTERM.
//
//	echo -listen 127.0.0.1:9001 -id echo-1 [-subprotocols a,b] [-compress] [-page]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/wsproxy/wsproxy/examples/echoserver"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("echo: ")
	if err := run(os.Args[1:]); err != nil {
		log.Fatal(err)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9001", "address to listen on")
	id := fs.String("id", "", "name reported to clients (default: the listen address)")
	subprotocols := fs.String("subprotocols", "", "comma-separated WebSocket subprotocols to accept")
	compress := fs.Bool("compress", false, "negotiate permessage-deflate when the client offers it")
	page := fs.Bool("page", false, "serve the demo page at GET /")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	opts := echoserver.Options{ID: *id, EnableCompression: *compress}
	for p := range strings.SplitSeq(*subprotocols, ",") {
		if p = strings.TrimSpace(p); p != "" {
			opts.Subprotocols = append(opts.Subprotocols, p)
		}
	}
	if *page {
		opts.Page = echoserver.DemoPage()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv, err := echoserver.Listen(*listen, opts)
	if err != nil {
		return err
	}
	log.Printf("%s listening on %s", srv.ID(), srv.Addr())
	<-ctx.Done()
	stop() // a second signal kills the process the default way
	log.Printf("shutting down")
	return srv.Close()
}
