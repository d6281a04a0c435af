package logsink

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSinkBatches: lines are written in batches, not one write per line,
// and nothing is lost by Close.
func TestSinkBatches(t *testing.T) {
	var w countingWriter
	s := New(&w, nil, time.Second, "test")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(s, "line %d\n", i)
	}
	if n := w.writes.Load(); n > 2 {
		t.Fatalf("%d writes for 1000 lines before a second passed", n)
	}
	s.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	if got := strings.Count(w.b.String(), "\n"); got != 1000 {
		t.Fatalf("%d lines written, want 1000", got)
	}
	if !strings.HasPrefix(w.b.String(), "line 0\nline 1\n") || !strings.HasSuffix(w.b.String(), "line 999\n") {
		t.Fatal("lines out of order")
	}
}

// TestSinkNeverWaitsForItsOutput: with an output that takes nothing (a
// pipe nobody reads), every Write still returns at once; past MaxBuffered
// lines are dropped, and once the output drains the drop is reported and
// what was kept arrives in order.
func TestSinkNeverWaitsForItsOutput(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := New(w, w, 0, "test")
	line := strings.Repeat("x", 1000) + "\n"
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 3*MaxBuffered/len(line); i++ {
			s.Write([]byte(line))
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Write waited for an output that takes nothing")
	}
	got := make(chan string)
	go func() {
		var b strings.Builder
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				got <- b.String()
				return
			}
		}
	}()
	s.Write([]byte("last\n"))
	s.Close()
	out := <-got
	if !strings.Contains(out, "test lines dropped: output too slow") {
		t.Error("the drop was not reported")
	}
	if !strings.HasSuffix(out, "last\n") {
		t.Error("the last line was lost")
	}
	// What waits is bounded by MaxBuffered, and the batch being written
	// when the output stopped by as much again.
	if n := strings.Count(out, line); n < MaxBuffered/len(line)/2 || n > 2*MaxBuffered/len(line)+64 {
		t.Errorf("%d lines kept of %d", n, 3*MaxBuffered/len(line))
	}
}

type countingWriter struct {
	mu     sync.Mutex
	b      strings.Builder
	writes atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
