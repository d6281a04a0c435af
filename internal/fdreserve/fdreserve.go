// Package fdreserve keeps one file descriptor spare, so that a listener
// that has run out of them can still accept a waiting client and close it
// at once, rather than leave it in the backlog until it gives up.
//
// The slot a reserve gives up is the lowest free one, and any thread of
// the process that calls accept4, socket or open takes it for a moment,
// even a call that then fails: accept4 allocates its descriptor before it
// looks at the backlog, so Go's accept retrying EMFILE on another port
// holds it every time it tries. Such a thread gives the slot back within
// microseconds, so Take tries again a few times after short pauses; a
// thread that keeps the slot (a client accepted elsewhere) makes Take give
// up, and the owner takes the reserve again before it accepts anyone.
package fdreserve

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// A Reserve is an open /dev/null, or nothing. It is not safe for
// concurrent use: its owner serialises Take and Release with its accepts.
type Reserve struct {
	f *os.File
}

// Tries is the number of attempts Take makes right after a refusal.
const Tries = 8

// Take opens the reserve if it is not held, making up to tries attempts
// with growing pauses (under a millisecond in all for Tries), and reports
// whether it is held.
func (r *Reserve) Take(tries int) bool {
	for i := 0; r.f == nil; i++ {
		f, err := os.Open(os.DevNull)
		if err == nil {
			r.f = f
			break
		}
		if i+1 >= tries || !outOfFiles(err) {
			return false
		}
		time.Sleep(time.Duration(i+1) * 20 * time.Microsecond)
	}
	return true
}

// Release closes the reserve, which frees its descriptor for the accept
// that follows; it reports whether there was one to free.
func (r *Reserve) Release() bool {
	if r.f == nil {
		return false
	}
	r.f.Close()
	r.f = nil
	return true
}

// Held reports whether the reserve is open.
func (r *Reserve) Held() bool { return r.f != nil }

func outOfFiles(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.EINTR)
}
