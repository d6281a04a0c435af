package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cmdReload asks a running proxy to re-read its config: through its admin
// API, which answers with what changed or why the file was refused, or by
// SIGHUP to the process in a pid file, which answers nothing (see its log).
func cmdReload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pidFile := fs.String("pidfile", "", "signal the process whose ID this file holds (wsproxy run -pidfile)")
	adminAddr := fs.String("admin", "", "ask the admin API at this address")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	switch {
	case *adminAddr != "":
		req, err := adminRequest(http.MethodPost, "http://"+*adminAddr+"/reload")
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			var e struct{ Error string }
			json.Unmarshal(body, &e)
			fmt.Fprintf(stderr, "reload refused: %s\n", e.Error)
			return 1
		}
		stdout.Write(body)
		return 0
	case *pidFile != "":
		b, err := os.ReadFile(*pidFile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			fmt.Fprintf(stderr, "%s does not hold a process ID\n", *pidFile)
			return 1
		}
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			fmt.Fprintf(stderr, "signal process %d: %v\n", pid, err)
			return 1
		}
		fmt.Fprintf(stdout, "sent SIGHUP to process %d; its log says whether the config was accepted\n", pid)
		return 0
	}
	fmt.Fprintln(stderr, "usage: wsproxy reload -pidfile FILE | -admin ADDR")
	return 2
}

// adminTokenEnv names the variable the admin commands take the admin API's
// bearer token from (the config's `admin ... { token {$WSPROXY_ADMIN_TOKEN} }`).
const adminTokenEnv = "WSPROXY_ADMIN_TOKEN"

// adminRequest is a request to the admin API, with its token if the
// environment has one.
func adminRequest(method, url string) (*http.Request, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, err
	}
	if tok := os.Getenv(adminTokenEnv); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return req, nil
}
