// Command chat runs the wsproxy chat backend (package chatserver) until it
// receives SIGINT or SIGTERM.
//
//	chat -listen 127.0.0.1:9101 -id chat-1
//
// Clients join a room with a WebSocket to /chat?room=NAME&user=NAME; GET /
// serves a chat page (/?room=lobby&user=ann) and GET /healthz answers
// "ok". Once listening it logs "ID listening on ADDR" to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/wsproxy/wsproxy/examples/chatserver"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("chat: ")
	if err := run(os.Args[1:]); err != nil {
		log.Fatal(err)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9101", "address to listen on")
	id := fs.String("id", "", "name of this backend in every message (default: the listen address)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv, err := chatserver.Listen(*listen, chatserver.Options{ID: *id})
	if err != nil {
		return err
	}
	log.Printf("%s listening on %s", srv.ID(), srv.Addr())
	<-ctx.Done()
	stop() // a second signal kills the process the default way
	log.Printf("shutting down")
	return srv.Close()
}
