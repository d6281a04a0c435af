// Package health decides which backends take new connections: active
// checks probe static backends, passive health ejects backends whose dials
// or handshakes fail, and a Checker combines both into each
// balancer.Backend's health (SetHealthy), which every balancer Policy
// honours.
//
// # Active checks
//
// A Check is an HTTP GET with an expected status, or a WebSocket handshake
// (closed at once with status 1000), run every Interval with a Timeout.
// Fall consecutive failures make a backend unhealthy, Rise consecutive
// successes healthy again. Checker.Watch starts a check and returns its
// stop function; one goroutine probes each distinct (address, Check),
// however many routes or configurations watch it, so that a reload which
// watches before it stops keeps probes, counters and verdicts.
//
// # Passive health
//
// The proxy reports each dial and handshake: ReportSuccess (no lock, no
// allocation: it runs for every connection) and ReportFailure with the
// route's backends and its Passive settings. MaxFails failures within
// FailWindow eject the backend for EjectFor, doubling for repeated
// ejections up to 5 minutes, but never when that would leave fewer than
// 100−MaxEjectedPercent percent of the route's backends usable, nor none.
// A timer per ejected backend returns it when the ejection ends.
//
// # Combining the two
//
// The Checker keeps both verdicts per address, apart: "an active check
// says down" and "ejected until". A backend is healthy only when neither
// says down, and the Checker calls SetHealthy whenever either changes (a
// probe crosses Rise or Fall, an ejection starts or ends). A passing check
// does not end an ejection early; the end of an ejection does not override
// a failing check.
//
// # Consul-discovered backends
//
// For backends that come from Consul, the proxy does not run active
// checks: Consul's own health checks already decide membership (critical
// instances leave the route's set), and probing them again would only
// duplicate that and disagree with it in between. Passive ejection still
// applies to them: Consul's checks run every few seconds at best, while a
// refused dial is known at once.
//
// # Typical use
//
//	hc := health.NewChecker(logger) // one per process, kept across reloads
//	defer hc.Close()
//	stop := hc.Watch(reg.Backend(addr, weight), health.Check{Path: "/healthz"})
//	defer stop() // when the route's configuration is replaced
//
//	up, err := upgrade.Dial(ctx, b.Addr, dialTimeout, req, hsTimeout)
//	switch {
//	case err == nil:
//		hc.ReportSuccess(b)
//	case upgrade.Retryable(err):
//		hc.ReportFailure(b, set.Backends(), route.passive)
//	}
package health
