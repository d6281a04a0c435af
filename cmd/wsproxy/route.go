package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/wsproxy/wsproxy/config"
	"github.com/wsproxy/wsproxy/proxy"
)

// cmdRoute answers where a key goes: from the config file alone (the
// backends as configured, all healthy, none loaded), or from a running
// proxy's admin API (health and live load included).
func cmdRoute(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "Caddyfile", "config file to compute the answer from")
	adminAddr := fs.String("admin", "", "ask the running proxy's admin API at this address instead")
	asJSON := fs.Bool("json", false, "print the whole answer (preference order included) as JSON")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(stderr, "usage: wsproxy route [-config FILE | -admin ADDR] [-json] ROUTE KEY")
		return 2
	}
	route, key := fs.Arg(0), fs.Arg(1)
	var l proxy.Lookup
	var err error
	if *adminAddr != "" {
		l, err = lookupAdmin(*adminAddr, route, key)
	} else {
		l, err = lookupConfig(*path, route, key)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(l)
		return 0
	}
	fmt.Fprintln(stdout, l.Backend)
	return 0
}

func lookupConfig(path, route, key string) (proxy.Lookup, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return proxy.Lookup{}, err
	}
	return proxy.LookupConfig(cfg, route, key)
}

func lookupAdmin(addr, route, key string) (proxy.Lookup, error) {
	u := "http://" + addr + "/lookup?" + url.Values{"route": {route}, "key": {key}}.Encode()
	req, err := adminRequest(http.MethodGet, u)
	if err != nil {
		return proxy.Lookup{}, err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return proxy.Lookup{}, err
	}
	defer resp.Body.Close()
	var l proxy.Lookup
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return l, fmt.Errorf("admin API: %s: %s", resp.Status, e.Error)
	}
	return l, json.NewDecoder(resp.Body).Decode(&l)
}
