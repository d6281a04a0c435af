package main

import (
	_ "embed"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"strings"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/examples/echoserver"
)

//go:embed demo.Caddyfile
var demoConfig string

// demoCaddyfile fills the demo template with the proxy's and backends'
// addresses.
func demoCaddyfile(listen, echo1, echo2 string) string {
	return strings.NewReplacer("{demo.listen}", listen, "{demo.echo1}", echo1, "{demo.echo2}", echo2).Replace(demoConfig)
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address the proxy listens on")
	print := fs.Bool("print", false, "print the demo config and exit")
	var cf commonFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	sigs := holdHUP()
	defer signal.Stop(sigs)
	var backends []*echoserver.Server
	defer func() {
		for _, b := range backends {
			b.Close()
		}
	}()
	for i := 1; i <= 2; i++ {
		b, err := echoserver.Listen("127.0.0.1:0", echoserver.Options{
			ID:                fmt.Sprintf("echo-%d", i),
			EnableCompression: true,
			Page:              echoserver.DemoPage(),
		})
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		backends = append(backends, b)
	}
	text := demoCaddyfile(*listen, backends[0].Addr(), backends[1].Addr())
	if *print {
		fmt.Fprint(stdout, text)
		return 0
	}
	cfg, err := config.Parse("demo.Caddyfile", []byte(text))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	srv, log, code, done := newServer(cfg, cf, stderr, new(slog.LevelVar))
	defer done()
	if srv == nil {
		return code
	}
	log.Info("demo: open http://" + *listen + "/ in a browser, or connect a WebSocket client to ws://" + *listen + "/ws?room=demo")
	return serve(srv, cfg, log, cf.pidFile, nil, sigs)
}
