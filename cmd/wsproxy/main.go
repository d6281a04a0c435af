// Command wsproxy is an edge reverse proxy and load balancer for WebSocket
// services.
//
//	wsproxy run [-config FILE]        serve the config (default ./Caddyfile)
//	wsproxy validate [-config FILE]   check a config; errors as file:line: message
//	wsproxy fmt [-w] FILE             format a Caddyfile
//	wsproxy demo [-listen ADDR]       the proxy in front of two built-in echo backends
//	wsproxy version                   print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsproxy/wsproxy/admin"
	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/internal/logsink"
	"github.com/wsproxy/wsproxy/internal/threads"
	"github.com/wsproxy/wsproxy/proxy"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: wsproxy <command> [flags]

commands:
  run       serve a config (default ./Caddyfile); SIGHUP reloads it, SIGTERM drains and exits
  validate  check a config and print every error as file:line: message
  fmt       format a Caddyfile (to stdout, or in place with -w)
  route     print the backend a key goes to on a route: wsproxy route [-config FILE | -admin ADDR] ROUTE KEY
  reload    make a running proxy re-read its config: wsproxy reload -pidfile FILE | -admin ADDR
  demo      run the proxy on 127.0.0.1:8080 in front of two built-in echo backends
  version   print the version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(args, stderr)
	case "validate":
		return cmdValidate(args, stdout, stderr)
	case "fmt":
		return cmdFmt(args, stdout, stderr)
	case "demo":
		return cmdDemo(args, stdout, stderr)
	case "route":
		return cmdRoute(args, stdout, stderr)
	case "reload":
		return cmdReload(args, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "wsproxy: unknown command %q\n%s", cmd, usage)
	return 2
}

// parseExit is the exit code of a subcommand whose flags did not parse:
// 0 when they asked for help (-h, which the flag package prints), else 2.
func parseExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		v += " " + bi.GoVersion
	}
	return "wsproxy " + v
}

// commonFlags are the flags of run and demo.
type commonFlags struct {
	logFormat string
	pidFile   string
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.pidFile, "pidfile", "", "write the process ID to this file (for wsproxy reload -pidfile)")
}

// newLogger's level is a LevelVar, so that a reload can change it.
func newLogger(w io.Writer, format, level string, lv *slog.LevelVar) (*slog.Logger, error) {
	if err := setLevel(lv, level); err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// setLevel sets lv to a config's log_level.
func setLevel(lv *slog.LevelVar, level string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("log level %q: %w", level, err)
	}
	lv.Set(l)
	return nil
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "Caddyfile", "config file")
	var cf commonFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	sigs := holdHUP()
	defer signal.Stop(sigs)
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	var level slog.LevelVar
	srv, log, code, done := newServer(cfg, cf, stderr, &level)
	defer done()
	if srv == nil {
		return code
	}
	reload := func() (proxy.ReloadReport, error) {
		c, err := config.Load(*path)
		if err != nil {
			return proxy.ReloadReport{}, err
		}
		if c.Global.Admin != cfg.Global.Admin {
			// Its self-registration in Consul would check the new address,
			// where nothing listens, and Consul would drop a healthy proxy.
			return proxy.ReloadReport{}, fmt.Errorf("%s: admin %q: the admin API has listened on %q since start, and a reload cannot move it; restart to apply it", *path, c.Global.Admin, cfg.Global.Admin)
		}
		rep, err := srv.Reload(c)
		if err == nil {
			setLevel(&level, c.Global.LogLevel) // checked by config.Load
		}
		return rep, err
	}
	return serve(srv, cfg, log, cf.pidFile, reload, sigs)
}

// holdHUP catches SIGHUP from now on, on the channel serve then reads all
// its signals from. Starting can take minutes (certificates, a Consul
// agent that does not answer), and a SIGHUP's default action ends the
// process: one sent by a config tool or `systemctl reload` meanwhile is
// kept instead, and reloads once the proxy is up.
func holdHUP() chan os.Signal {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGHUP)
	return sigs
}

// newServer builds the logger and the proxy for cfg; on failure it says why
// on stderr and returns the exit code. The logger writes through a sink
// that never waits for stderr (logging happens on the event loops and
// under locks, and a log pipe can back up); done flushes it and must run
// before the process exits.
func newServer(cfg *config.Config, cf commonFlags, stderr io.Writer, level *slog.LevelVar) (srv *proxy.Server, log *slog.Logger, code int, done func()) {
	sink := logsink.New(stderr, nil, 0, "log")
	done = func() {
		// At exit, what is left gets a moment, not for ever: stderr may be
		// the very pipe that stopped taking data.
		flushed := make(chan struct{})
		go func() { sink.Close(); close(flushed) }()
		select {
		case <-flushed:
		case <-time.After(2 * time.Second):
		}
	}
	log, err := newLogger(sink, cf.logFormat, cfg.Global.LogLevel, level)
	if err != nil {
		fmt.Fprintln(sink, err)
		return nil, nil, 2, done
	}
	// One event loop per CPU the runtime may use (GOMAXPROCS follows the
	// container's CPU limit), and one P more than that: a loop waiting in
	// epoll_wait keeps its P, so without a spare one Go's own goroutines
	// (the collector, timers, plain HTTP) would take a waiting loop's P
	// and the loop would then wait for it back (a futex hand-off) when
	// its events arrive.
	loops := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(loops + 1)
	srv, err = proxy.New(cfg, proxy.Options{Logger: log, Loops: loops})
	if err != nil {
		fmt.Fprintln(sink, err)
		return nil, nil, 1, done
	}
	return srv, log, 0, done
}

// serve starts srv and handles signals until it has shut down.
func serve(srv *proxy.Server, cfg *config.Config, log *slog.Logger, pidFile string, reload func() (proxy.ReloadReport, error), sigs chan os.Signal) int {
	log.Debug("starting")
	if err := srv.Start(); err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	if pidFile != "" {
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			log.Error("cannot write the pid file", "err", err)
			return 1
		}
		defer os.Remove(pidFile)
	}
	// A burst of handshakes leaves threads the runtime never ends, each
	// holding its stacks; end them once it is over (internal/threads).
	// Here and not in proxy.New: a process that starts children with a
	// parent-death signal (tests do) must not lose the thread that did.
	trim, stopTrim := context.WithCancel(context.Background())
	defer stopTrim()
	go threads.Trim(trim, 2*runtime.GOMAXPROCS(0)+4, time.Second, func(n int) {
		log.Debug("ended idle threads", "threads", n)
	})
	// SIGHUP and the admin API's POST /reload go through here, one at a time.
	var reloads sync.Mutex
	var adminAPI atomic.Pointer[admin.Server]
	doReload := func() (proxy.ReloadReport, error) {
		if reload == nil {
			return proxy.ReloadReport{}, errors.New("this config cannot be reloaded")
		}
		reloads.Lock()
		defer reloads.Unlock()
		rep, err := reload()
		if err != nil {
			log.Error("reload failed; the running config stays", "err", err)
			return rep, err
		}
		if a := adminAPI.Load(); a != nil {
			// A rotated token (one that leaked) must stop working now.
			g := srv.Config().Global
			a.SetAccess(g.AdminToken, g.AdminAllowRemote)
		}
		return rep, err
	}
	if cfg.Global.Admin != "" {
		a, err := admin.Start(cfg.Global.Admin, admin.Options{Version: versionString(), Proxy: srv, Reload: doReload, Logger: log,
			Token: cfg.Global.AdminToken, AllowRemote: cfg.Global.AdminAllowRemote})
		if err != nil {
			log.Error("admin API failed to start", "addr", cfg.Global.Admin, "err", err)
			return 1
		}
		defer a.Close()
		adminAPI.Store(a)
	}
	// A reload runs beside the signal loop, which must stay free for
	// SIGTERM: a reload can wait minutes for a certificate, and shutting
	// down is what ends that wait. A SIGHUP during a reload queues one
	// more (it reads the file then); further ones add nothing.
	hups := make(chan struct{}, 1)
	reloaderDone := make(chan struct{})
	go func() {
		defer close(reloaderDone)
		for range hups {
			doReload()
		}
	}()
	// On the way out, a queued SIGHUP is dropped and a reload in flight
	// (shutting down has cancelled its wait) gets a moment to log how it
	// ended, so the operator's log does not stop in the middle of it.
	defer func() {
		select {
		case <-hups:
		default:
		}
		close(hups)
		select {
		case <-reloaderDone:
		case <-time.After(2 * time.Second):
			log.Warn("exiting with a reload still in flight")
		}
	}()
	// SIGINT and SIGTERM keep their default action until now: during
	// start-up they end the process at once.
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			select {
			case hups <- struct{}{}:
			default:
			}
			continue
		}
		grace := srv.Config().Global.GracePeriod
		log.Info("shutting down: closing live WebSockets with 1001", "signal", sig.String(), "grace_period", grace, "live", srv.Sessions())
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		done := make(chan error, 1)
		go func() { done <- srv.Shutdown(ctx) }()
		select {
		case err := <-done:
			cancel()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				log.Error("shutdown", "err", err)
				return 1
			}
			log.Info("stopped")
			return 0
		case sig := <-sigs:
			cancel()
			log.Warn("second signal: exiting now", "signal", sig.String())
			return 1
		}
	}
	return 0
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "Caddyfile", "config file")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	cfg, err := config.Load(*path)
	if err == nil {
		// Compiling catches what only the runtime form can check;
		// proxy.Validate does it without starting anything to shut down.
		err = proxy.Validate(cfg)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid\n", *path)
	return 0
}

func cmdFmt(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fmt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	write := fs.Bool("w", false, "write the result to the file instead of stdout")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: wsproxy fmt [-w] FILE")
		return 2
	}
	path := fs.Arg(0)
	body, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	out := config.Format(body)
	if !*write {
		stdout.Write(out)
		return 0
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
