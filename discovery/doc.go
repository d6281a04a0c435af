// Package discovery finds a route's backends in Consul and follows them as
// instances come, go and change health.
//
// A Consul client (NewConsul) runs one blocking-query loop per distinct Query
// (Query.Key), however many routes Watch it, and hands every subscriber an
// Update each time the instance set changes. The loop follows Consul's
// blocking-query rules (an index that goes backwards restarts the loop, an
// index of 0 is never waited on), limits its own rate so that a flapping
// service cannot make it spin, and backs off exponentially, with jitter, when
// Consul fails.
//
// Discovery failure is not an outage: while Consul cannot be reached,
// subscribers keep the last known good set (Update.Stale), the package logs
// the failure once per state change, and State reports it for the admin API
// and metrics. When Consul answers again the fresh set is delivered. An empty
// set of passing instances, on the other hand, is a real state and is
// delivered as such (the route answers 503), unless Query.KeepStaleOnEmpty.
//
// The package turns Consul's answers into Instances (address, weight,
// identity); building balancer Sets from them, and deciding what happens to
// connections open to an instance that left, is the proxy's job.
package discovery
