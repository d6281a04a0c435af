package proxy

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsproxy/wsproxy/config"
)

// TestValidateAgreesWithNew: what New refuses after parsing, Validate
// refuses too (with the same message when New's has a file:line), and what
// New accepts, Validate accepts.
func TestValidateAgreesWithNew(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		conf    string
		wantErr bool
	}{
		"access log dir missing": {"{\n\taccess_log " + filepath.Join(dir, "missing", "a.log") + "\n}\n127.0.0.1:1 {\n\troute /* {\n\t\tto 127.0.0.1:9\n\t}\n}\n", true},
		"tls internal":           {"{\n\tstorage " + filepath.Join(dir, "certs") + "\n}\nlocalhost:1 {\n\ttls internal\n\troute /* {\n\t\tto 127.0.0.1:9\n\t}\n}\n", false},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := config.Parse("test.Caddyfile", []byte(tc.conf))
			if err != nil {
				t.Fatal(err)
			}
			verr := Validate(cfg)
			srv, nerr := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
			if srv != nil {
				srv.Shutdown(t.Context())
			}
			if (verr != nil) != tc.wantErr || (nerr != nil) != tc.wantErr {
				t.Fatalf("Validate: %v; New: %v; want an error: %v", verr, nerr, tc.wantErr)
			}
			if nerr != nil && strings.HasPrefix(nerr.Error(), "test.Caddyfile:") && verr.Error() != nerr.Error() {
				t.Fatalf("Validate: %v\nNew:      %v", verr, nerr)
			}
		})
	}
}
