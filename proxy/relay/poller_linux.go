//go:build linux

package relay

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// Poller parks idle directions: it waits for their sockets with its own
// epoll set, so an idle connection holds neither a goroutine nor a buffer.
// When a socket becomes readable the direction is run on a new goroutine
// until the socket is drained, then re-armed.
//
// Sockets are registered level-triggered with EPOLLONESHOT: an event
// disarms the socket until the direction re-arms it, and re-arming
// (EPOLL_CTL_MOD) re-checks readiness, so bytes that arrive between the
// last read and the re-arm raise a new event instead of being missed.
//
// A Poller is safe for concurrent use. Close it after every session that
// uses it has ended.
type Poller struct {
	epfd   int
	wakefd int // an eventfd that ends the loop on Close

	mu   sync.RWMutex
	dirs map[int32]*direction // registered sockets by fd number

	done chan struct{}
}

// NewPoller starts a poller. It fails only if the kernel refuses an epoll
// set or an eventfd.
func NewPoller() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, err
	}
	p := &Poller{epfd: epfd, wakefd: wakefd, dirs: map[int32]*direction{}, done: make(chan struct{})}
	go p.loop()
	return p, nil
}

// Close stops the poller's goroutine and releases its descriptors.
func (p *Poller) Close() error {
	var one = [8]byte{1}
	unix.Write(p.wakefd, one[:])
	<-p.done
	unix.Close(p.wakefd)
	return unix.Close(p.epfd)
}

func (p *Poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for i := 0; i < n; i++ {
			fd := events[i].Fd
			if fd == int32(p.wakefd) {
				return
			}
			p.mu.RLock()
			d := p.dirs[fd]
			p.mu.RUnlock()
			if d != nil {
				// A stale event (the socket was closed and its number
				// reused) only causes one extra, harmless read.
				d.wake()
			}
		}
	}
}

// register adds d's source to the epoll set, disarmed, the first time d
// parks. It runs while d's goroutine still owns d. It reports false if the
// socket is closed.
func (p *Poller) register(d *direction) bool {
	if d.registered {
		return true
	}
	// Under Control, which keeps the fd number from being closed and reused
	// meanwhile.
	ok := false
	d.src.raw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLONESHOT, Fd: int32(fd)}
		if unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev) == nil {
			d.fd, ok = int32(fd), true
		}
	})
	if !ok {
		return false
	}
	p.mu.Lock()
	p.dirs[d.fd] = d
	p.mu.Unlock()
	d.registered = true
	return true
}

// arm waits for d's registered source to become readable; false if the
// socket is gone. Once it succeeds d may already run on another goroutine,
// so it touches nothing of d but the immutable fd. If the socket was closed
// meanwhile this fails (or, should its number have been reused by another
// registered socket, re-arms that one harmlessly); the session's abort
// wakes d either way.
func (p *Poller) arm(d *direction) bool {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: d.fd}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(d.fd), &ev) == nil
}

// remove forgets d. The kernel drops a closed socket from the epoll set by
// itself; an open one is deleted explicitly.
func (p *Poller) remove(d *direction) {
	if !d.registered {
		return
	}
	d.src.raw.Control(func(fd uintptr) {
		unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
	p.mu.Lock()
	if p.dirs[d.fd] == d {
		delete(p.dirs, d.fd)
	}
	p.mu.Unlock()
}
