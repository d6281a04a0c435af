package discovery

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/hashicorp/consul/api"
)

// Instance statuses: the aggregate of all of an instance's health checks,
// node checks included, is the worst of them.
const (
	StatusPassing  = api.HealthPassing
	StatusWarning  = api.HealthWarning
	StatusCritical = api.HealthCritical
)

// Instance is one instance of a Consul service as a route sees it.
// Instances in an Update are read-only: they are shared by every subscriber.
type Instance struct {
	// Addr is "host:port" as the dialer wants it: the service address, or
	// the node's address when the service has none, and the service port.
	Addr string

	// Weight is the instance's relative share, at least 1: the service meta
	// value under Query.WeightMetaKey if that is set and holds an integer
	// >= 1, else Consul's Weights.Passing (Weights.Warning for an instance
	// in warning), else 1.
	Weight int

	// ID is the service instance ID and Node the name of its node.
	ID   string
	Node string

	// Tags and Meta are the instance's service tags and service meta.
	Tags []string
	Meta map[string]string

	// Status is StatusPassing or StatusWarning (critical instances, and
	// instances in maintenance, are never part of an Update).
	Status string
}

func (i *Instance) equal(o *Instance) bool {
	return i.Addr == o.Addr && i.Weight == o.Weight && i.ID == o.ID &&
		i.Node == o.Node && i.Status == o.Status &&
		slices.Equal(i.Tags, o.Tags) && maps.Equal(i.Meta, o.Meta)
}

func sameInstances(a, b []Instance) bool {
	return slices.EqualFunc(a, b, func(x, y Instance) bool { return x.equal(&y) })
}

// Query names a Consul service and the filters that choose which of its
// instances a route uses. Two Queries with the same Key share one watch.
type Query struct {
	// Service is the Consul service name. Required.
	Service string

	// Tags are tags an instance must all carry. Order and duplicates do not
	// matter.
	Tags []string

	// ServiceMeta and NodeMeta are key/value pairs that the instance's
	// service meta, and its node's meta, must all hold.
	ServiceMeta map[string]string
	NodeMeta    map[string]string

	// Datacenter is the Consul datacenter to ask; empty means the one of
	// ConsulConfig (and then the agent's own).
	Datacenter string

	// AllowWarning admits instances whose worst check is warning. By default
	// only passing instances are used.
	AllowWarning bool

	// WeightMetaKey, if set, is the service meta key that holds an
	// instance's weight (e.g. "weight"). Instances without a valid value
	// there, and all instances when it is empty, are weighted by Consul's
	// service Weights.
	WeightMetaKey string

	// KeepStaleOnEmpty keeps the last non-empty instance set when Consul
	// answers that no instance passes, instead of delivering the empty set.
	// The kept set is delivered with Stale set and Err ErrNoInstances.
	KeepStaleOnEmpty bool
}

// ErrNoInstances is Update.Err when no instance passes a Query whose
// KeepStaleOnEmpty kept the last non-empty set.
var ErrNoInstances = errors.New("discovery: no instance passes the query; keeping the last non-empty set")

// Key returns a canonical form of q: Queries that select the same instances
// the same way have the same Key, whatever the order of their tags or meta.
func (q Query) Key() string {
	tags := slices.Clone(q.Tags)
	slices.Sort(tags)
	tags = slices.Compact(tags)
	k := struct {
		S  string            `json:"s"`
		T  []string          `json:"t,omitempty"`
		SM map[string]string `json:"sm,omitempty"`
		NM map[string]string `json:"nm,omitempty"`
		DC string            `json:"dc,omitempty"`
		W  bool              `json:"w,omitempty"`
		WK string            `json:"wk,omitempty"`
		K  bool              `json:"k,omitempty"`
	}{q.Service, tags, q.ServiceMeta, q.NodeMeta, q.Datacenter, q.AllowWarning, q.WeightMetaKey, q.KeepStaleOnEmpty}
	// encoding/json sorts map keys, so the encoding is canonical; it cannot
	// fail on strings and bools.
	b, _ := json.Marshal(k)
	return string(b)
}

// Validate reports whether q can be watched.
func (q Query) Validate() error {
	if q.Service == "" {
		return errors.New("discovery: query has no service name")
	}
	if strings.ContainsFunc(q.Service, func(r rune) bool { return r == '/' || unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return fmt.Errorf("discovery: service name %q has a slash, space or control character", q.Service)
	}
	if strings.ContainsFunc(q.Datacenter, func(r rune) bool { return r == '/' || unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return fmt.Errorf("discovery: datacenter %q has a slash, space or control character", q.Datacenter)
	}
	for _, t := range q.Tags {
		if t == "" {
			return fmt.Errorf("discovery: service %q: empty tag in filter", q.Service)
		}
	}
	return nil
}

// checkStatus returns the aggregate status of checks: the worst of them,
// with maintenance and unknown statuses counting as critical. No check at
// all is passing, as in Consul.
func checkStatus(checks api.HealthChecks) string {
	worst := StatusPassing
	for _, c := range checks {
		if c == nil {
			continue
		}
		if c.CheckID == api.NodeMaint || strings.HasPrefix(c.CheckID, api.ServiceMaintPrefix) {
			return StatusCritical
		}
		switch c.Status {
		case api.HealthPassing:
		case api.HealthWarning:
			worst = StatusWarning
		default: // critical, maintenance, anything unknown
			return StatusCritical
		}
	}
	return worst
}

// instances turns a health-service answer into q's instance set: filtered,
// weighted, sorted by Addr, one instance per Addr.
//
// Tags and node meta were already filtered by Consul (the tag and node-meta
// query parameters); service meta was not (Consul has no parameter for it,
// only the Filter expression language, whose quoting of user strings we do
// not want to get wrong). Every filter is applied here again anyway: it is
// cheap, and the result then does not depend on what the agent honoured.
func instances(entries []*api.ServiceEntry, q *Query) []Instance {
	out := make([]Instance, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil {
			continue
		}
		s := e.Service
		status := checkStatus(e.Checks)
		if status != StatusPassing && (status != StatusWarning || !q.AllowWarning) {
			continue
		}
		if !hasTags(s.Tags, q.Tags) || !hasMeta(s.Meta, q.ServiceMeta) {
			continue
		}
		node := e.Node
		if len(q.NodeMeta) > 0 && (node == nil || !hasMeta(node.Meta, q.NodeMeta)) {
			continue
		}
		host := s.Address
		if host == "" && node != nil {
			host = node.Address
		}
		if host == "" || s.Port <= 0 || s.Port > 65535 {
			continue // nothing to dial
		}
		in := Instance{
			Addr:   net.JoinHostPort(host, strconv.Itoa(s.Port)),
			Weight: weight(s, status, q.WeightMetaKey),
			ID:     s.ID,
			Tags:   slices.Clone(s.Tags),
			Meta:   maps.Clone(s.Meta),
			Status: status,
		}
		if node != nil {
			in.Node = node.Node
		}
		out = append(out, in)
	}
	// One instance per address: the passing one, then the heaviest, then
	// the smallest ID and node, so that the choice does not depend on the
	// order of Consul's answer.
	slices.SortFunc(out, func(a, b Instance) int {
		return cmp.Or(
			strings.Compare(a.Addr, b.Addr),
			cmp.Compare(statusRank(a.Status), statusRank(b.Status)),
			cmp.Compare(b.Weight, a.Weight),
			strings.Compare(a.ID, b.ID),
			strings.Compare(a.Node, b.Node),
		)
	})
	out = slices.CompactFunc(out, func(a, b Instance) bool { return a.Addr == b.Addr })
	return slices.Clip(out)
}

func statusRank(s string) int {
	if s == StatusPassing {
		return 0
	}
	return 1
}

func hasTags(have, want []string) bool {
	for _, t := range want {
		if !slices.Contains(have, t) {
			return false
		}
	}
	return true
}

func hasMeta(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func weight(s *api.AgentService, status, metaKey string) int {
	if metaKey != "" {
		if v, ok := s.Meta[metaKey]; ok {
			if w, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && w >= 1 {
				return w
			}
		}
	}
	w := s.Weights.Passing
	if status == StatusWarning {
		w = s.Weights.Warning
	}
	return max(w, 1)
}
