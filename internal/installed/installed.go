// Package installed finds the external programs the tests run (Consul,
// Pebble): a path given in an environment variable, or else the one an
// install script of the repository prints after installing it into a cache
// outside the repository.
package installed

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binary returns $envVar if it is set, else runs scripts/SCRIPT (found in
// the working directory or a parent: go test runs in the package's
// directory) with extraEnv added, and returns the last line it prints. The
// result must be an executable file.
func Binary(envVar, script string, extraEnv ...string) (string, error) {
	if p := os.Getenv(envVar); p != "" {
		if err := isExecutable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", envVar, p, err)
		}
		return p, nil
	}
	path, err := findScript(script)
	if err != nil {
		return "", fmt.Errorf("no %s and %w", envVar, err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", path)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("no %s, and %s failed: %w\n%s", envVar, path, err, tail(stderr.String(), 4096))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	p := strings.TrimSpace(lines[len(lines)-1])
	if err := isExecutable(p); err != nil {
		return "", fmt.Errorf("%s printed %q: %w", path, p, err)
	}
	return p, nil
}

func findScript(name string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no scripts/%s above the working directory", name)
		}
		dir = parent
	}
}

func isExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
