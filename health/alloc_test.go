//go:build !race

package health

import (
	"testing"
	"time"
)

func TestReportSuccessAllocs(t *testing.T) {
	c := newChecker(t)
	bs := backends(4)
	c.ReportFailure(bs[1], bs, Passive{})
	c.ReportFailure(bs[2], bs, Passive{})
	c.ReportSuccess(bs[2]) // a state with no failures left

	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"unknown backend", func() { c.ReportSuccess(bs[0]) }},
		{"no failures", func() { c.ReportSuccess(bs[2]) }},
		{"clearing failures", func() {
			c.ReportSuccess(bs[1])
			// Put a failure back without allocating, for the next run.
			c.mu.Lock()
			st := (*c.states.Load())[bs[1].Addr]
			st.failTimes = append(st.failTimes, time.Time{})
			st.fails.Store(1)
			c.mu.Unlock()
		}},
	} {
		if n := testing.AllocsPerRun(1000, tc.f); n != 0 {
			t.Errorf("%s: %v allocations per ReportSuccess, want 0", tc.name, n)
		}
	}
}
