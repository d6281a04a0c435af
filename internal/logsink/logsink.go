// Package logsink is a log output that never makes its writer wait: lines
// are buffered and written in batches on a goroutine of their own, so code
// that logs from an event loop, or while holding a lock, does not stop
// when the output (a disk, a pipe, journald, a container's log driver)
// backs up. Past a bound of unwritten bytes, lines are dropped, counted,
// and reported once the output takes data again.
package logsink

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Sink is an io.WriteCloser over an output. Each Write is one line (or
// several whole ones), as slog's handlers write.
type Sink struct {
	w     io.Writer
	file  io.Closer // nil for an output the sink does not own
	every time.Duration
	name  string

	mu      sync.Mutex
	buf     []byte
	spare   []byte
	timer   *time.Timer
	armed   bool
	dropped uint64
	flushMu sync.Mutex // one batch written at a time, in order
}

const (
	// FlushBytes is how much buffered output is written at once without
	// waiting for the period.
	FlushBytes = 64 << 10
	// MaxBuffered is how much unwritten output a Sink holds before it
	// drops lines.
	MaxBuffered = 4 << 20
)

// New returns a Sink writing to w at least every period (0: as soon as a
// goroutine can, still in batches), closing file (if not nil) on Close.
// name says whose lines were dropped, in the line reporting it.
func New(w io.Writer, file io.Closer, every time.Duration, name string) *Sink {
	return &Sink{w: w, file: file, every: every, name: name}
}

// Write buffers p; it never waits for the output.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.buf)+len(p) > MaxBuffered {
		s.dropped++
		return len(p), nil
	}
	s.buf = append(s.buf, p...)
	switch {
	case !s.armed:
		s.armed = true
		d := s.every
		if len(s.buf) >= FlushBytes {
			d = 0
		}
		if s.timer == nil {
			s.timer = time.AfterFunc(d, s.flush)
		} else {
			s.timer.Reset(d)
		}
	case len(s.buf) >= FlushBytes && len(s.buf)-len(p) < FlushBytes:
		s.timer.Reset(0)
	}
	return len(p), nil
}

// flush writes what is buffered.
func (s *Sink) flush() {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	data, dropped := s.buf, s.dropped
	s.buf, s.spare, s.armed, s.dropped = s.spare[:0], nil, false, 0
	s.mu.Unlock()
	if dropped > 0 {
		fmt.Fprintf(s.w, "{\"msg\":\"%s lines dropped: output too slow\",\"dropped\":%d}\n", s.name, dropped)
	}
	if len(data) > 0 {
		s.w.Write(data)
	}
	s.mu.Lock()
	if s.spare == nil && cap(data) <= 2*MaxBuffered {
		s.spare = data[:0]
	}
	s.mu.Unlock()
}

// Close writes what is left (waiting for the output) and closes the file
// the Sink owns.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	s.flush()
	if s.file != nil {
		return s.file.Close()
	}
	return nil
}
