package proxy

import (
	"log/slog"
	"path/filepath"
	"strconv"
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
		"consul CA file missing": {"{\n\tconsul {\n\t\taddress 127.0.0.1:9\n\t\ttls_ca_file " + filepath.Join(dir, "missing-ca.pem") + "\n\t}\n}\n127.0.0.1:1 {\n\troute /* {\n\t\tconsul chat\n\t}\n}\n", true},
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

// TestBindAddrLoopbackNames: a port whose sites all name loopback hosts,
// *.localhost names included (RFC 6761: they resolve to loopback), listens
// on loopback only; the example tls.Caddyfile is one.
func TestBindAddrLoopbackNames(t *testing.T) {
	t.Parallel()
	for addrs, want := range map[string]string{
		"localhost:8443":                        "127.0.0.1:8443",
		"chat.localhost:8443":                   "127.0.0.1:8443",
		"127.0.0.1:8443, chat.localhost:8443":   "127.0.0.1:8443",
		"example.com:8443":                      ":8443",
		"chat.localhost:8443, example.com:8443": ":8443",
		"notlocalhost:8443":                     ":8443",
		"[::1]:8443":                            "[::1]:8443",
		"127.0.0.2:8443":                        "127.0.0.2:8443",
		"127.0.0.1:8443, [::1]:8443":            ":8443",
		"127.0.0.2:8443, localhost:8443":        ":8443",
	} {
		cfg, err := config.Parse("test.Caddyfile", []byte(addrs+" {\n\ttls internal\n\troute /* {\n\t\tto 127.0.0.1:9\n\t}\n}\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got := bindAddr(cfg, 8443); got != want {
			t.Errorf("%s: binds %s, want %s", addrs, got, want)
		}
	}
	cfg, err := config.Load("../examples/configs/tls.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range cfg.Sites {
		for _, a := range st.Addresses {
			if got := bindAddr(cfg, a.Port); got != "127.0.0.1:"+strconv.Itoa(a.Port) {
				t.Errorf("examples/configs/tls.Caddyfile: port %d binds %s, want loopback", a.Port, got)
			}
		}
	}
}
