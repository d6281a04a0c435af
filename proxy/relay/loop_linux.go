//go:build linux

package relay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/wsproxy/wsproxy/keepalive"
)

// Loops is a fixed set of event loops that own every relayed plain-TCP
// leg. Each loop runs on its own locked OS thread with its own
// level-triggered epoll set and read buffer. A session's two sockets belong
// to one loop for their whole life: the loop reads a readable socket once,
// tracks the frames, and writes to the peer without blocking. What the peer
// does not take waits in one pooled buffer while the source is not read,
// so TCP pushes back on the sender. Close, drains, timers and shutdown are
// tasks posted to the owning loop; nothing waits behind a write.
//
// Loops is safe for concurrent use. Close it after every session has ended.
type Loops struct {
	loops []*loop
	next  atomic.Uint32
	wheel *keepalive.Wheel // the sessions' timers, fired into their loops
	// recLegs counts TLS legs moved to the record layer (RecordLegs).
	recLegs atomic.Uint64
	// lookup resolves a backend's host name (net.DefaultResolver's;
	// tests make it slow on purpose).
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

func defaultLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// RecordLegs is how many TLS client legs have moved from crypto/tls to
// the loops' own record layer so far (TLS 1.3 after the upgrade); the
// rest stay with crypto/tls.
func (ls *Loops) RecordLegs() uint64 { return ls.recLegs.Load() }

// NewLoops starts n loops (GOMAXPROCS if n is not positive) whose read
// buffers are bufSize bytes (DefaultBufferSize if not positive).
func NewLoops(n, bufSize int) (*Loops, error) {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	if bufSize <= 0 {
		bufSize = DefaultBufferSize
	}
	ls := &Loops{wheel: keepalive.NewWheel(0, 0), lookup: defaultLookup}
	for i := 0; i < n; i++ {
		l, err := newLoop(bufSize, ls.wheel)
		if err != nil {
			ls.Close()
			return nil, err
		}
		l.owner = ls
		ls.loops = append(ls.loops, l)
	}
	return ls, nil
}

// Close stops the loops. Sessions still on them are dropped (their
// connections closed, OnDone called) first.
func (ls *Loops) Close() error {
	for _, l := range ls.loops {
		l.post(task{op: opStop})
		<-l.done
		unix.Close(l.evfd)
		unix.Close(l.epfd)
	}
	ls.loops = nil
	ls.wheel.Close()
	return nil
}

func (ls *Loops) pick() *loop {
	return ls.loops[int(ls.next.Add(1))%len(ls.loops)]
}

type task struct {
	s                   *evSession
	op                  uint8
	toClient, toBackend uint16
	reason              string
}

type loop struct {
	epfd, evfd int
	mu         sync.Mutex
	queue      []task // posted, not yet run; under mu
	stopped    bool   // opStop was posted; under mu
	running    []task // the batch being run; loop thread only

	legs    []*evLeg // by file descriptor
	gen     int32    // tags registrations, so a stale event finds no leg
	buf     []byte   // the read buffer: MaxCarry bytes of carry, then reads
	scratch [maxControlFrameBytes]byte
	pool    *Pool
	owner   *Loops
	rec     *recLoop // for TLS legs on the record layer; nil until one
	wheel   *keepalive.Wheel
	now     int64 // unix ns, taken once per wakeup
	done    chan struct{}
}

func newLoop(bufSize int, wheel *keepalive.Wheel) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	l := &loop{epfd: epfd, evfd: evfd, buf: make([]byte, MaxCarry+bufSize), pool: NewPool(bufSize), wheel: wheel, done: make(chan struct{})}
	go l.run()
	return l, nil
}

// post queues t for the loop and wakes it if the queue was empty: one
// eventfd write per batch of tasks, not per task.
func (l *loop) post(t task) bool {
	l.mu.Lock()
	if l.stopped {
		// After Close the eventfd's number may belong to another file.
		l.mu.Unlock()
		return false
	}
	if t.op == opStop {
		l.stopped = true
	}
	l.queue = append(l.queue, t)
	first := len(l.queue) == 1
	l.mu.Unlock()
	if first {
		var one = [8]byte{1, 0, 0, 0, 0, 0, 0, 0}
		unix.Write(l.evfd, one[:])
	}
	return true
}

func (l *loop) run() {
	// The loop's thread does nothing else, so its blocking epoll_wait costs
	// no other goroutine a thread. Unlocked before the goroutine ends: a
	// locked thread would end with it, and a child process that thread
	// happened to fork gets its parent-death signal (Pdeathsig) then.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(l.done)
	events := make([]unix.EpollEvent, 256)
	busy := false // the last wait returned events
	var swept, yielded int64
	for {
		// While AEADs are cached, wake up now and then to free those of
		// legs gone idle (rec_linux.go).
		wait := -1
		if l.rec != nil && l.rec.cache.live > 0 {
			wait = int(aeadIdle / 1e6)
		}
		n, err := 0, error(nil)
		if busy {
			n, err = pollNow(l.epfd, events)
		}
		if n == 0 && err == nil {
			n, err = unix.EpollWait(l.epfd, events, wait)
		}
		busy = n > 0
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			panic("relay: epoll_wait: " + err.Error())
		}
		l.now = time.Now().UnixNano()
		if l.now-yielded >= yieldEvery {
			yielded = l.now
			runtime.UnlockOSThread()
			runtime.Gosched()
			runtime.LockOSThread()
		}
		if l.now-swept >= aeadIdle {
			swept = l.now
			l.sweepAEADs()
		}
		tasks := false
		for i := 0; i < n; i++ {
			ev := &events[i]
			if int(ev.Fd) == l.evfd {
				tasks = true
				continue
			}
			if lg := l.leg(ev.Fd, ev.Pad); lg != nil {
				lg.s.event(lg, ev.Events)
			}
		}
		// Tasks run after the batch's socket events: a task may register a
		// socket whose number a stale event of this batch still names.
		if tasks && !l.runTasks() {
			l.dropAll()
			return
		}
	}
}

// yieldEvery is how often a busy loop passes through the scheduler. The
// runtime's monitor treats a goroutine that has not been scheduled for
// 10 ms as running too long: it signals it, or takes its P if it is in
// epoll_wait at that moment, and every P it takes resets the monitor to
// waking every 20 µs. A loop under load never blocks long enough to be
// rescheduled, so without this the monitor woke about 3,300 times a second
// and the process made twice the context switches per message; a yield
// every 8 ms (inside the monitor's 10 ms, with room for a long batch)
// costs far less. The loop lets go of its thread for the yield: a locked
// goroutine that yields hands its P and thread over (about six futex calls
// each time), an unlocked one is picked up again by the same thread.
const yieldEvery = int64(8 * time.Millisecond)

func (l *loop) leg(fd, gen int32) *evLeg {
	if int(fd) >= len(l.legs) {
		return nil
	}
	lg := l.legs[fd]
	if lg == nil || lg.gen != gen {
		return nil
	}
	return lg
}

// runTasks runs what was posted; false when the loop must stop.
func (l *loop) runTasks() bool {
	var cnt [8]byte
	unix.Read(l.evfd, cnt[:]) // reset before taking the queue, so no post is missed
	l.mu.Lock()
	l.running, l.queue = l.queue, l.running[:0]
	l.mu.Unlock()
	stop := false
	for i := range l.running {
		t := &l.running[i]
		switch t.op {
		case opStop:
			stop = true
		case opStart:
			t.s.begin()
		case opClose:
			t.s.proxyClose(t.toClient, t.toBackend, t.reason)
		case opAbort:
			t.s.finish()
		case opTimer:
			t.s.onTimer()
		case opDial:
			t.s.dialNext(nil)
		case opResolved:
			t.s.resolved()
		case opListen:
			t.s.listen()
		case opUnlisten:
			t.s.unlisten()
		}
		l.running[i] = task{} // drop references for the GC
	}
	return !stop
}

// dropAll ends the sessions still on a stopping loop.
func (l *loop) dropAll() {
	for _, lg := range l.legs {
		if lg != nil && lg.s.listener != nil {
			lg.s.unlisten()
			continue
		}
		if lg != nil && !lg.s.done {
			lg.s.finish()
		}
	}
}

// register adds a leg's socket to the loop.
func (l *loop) register(lg *evLeg) {
	if lg.fd < len(l.legs) && l.legs[lg.fd] == lg {
		return // already (a backend the loop connected itself)
	}
	for lg.fd >= len(l.legs) {
		l.legs = append(l.legs, nil)
	}
	l.gen++
	lg.gen = l.gen
	l.legs[lg.fd] = lg
}

// unregister forgets a leg and closes its socket (which also removes it
// from the epoll set: the loop holds its only descriptor).
func (l *loop) unregister(lg *evLeg) {
	if lg.fd < 0 {
		return
	}
	if lg.fd < len(l.legs) && l.legs[lg.fd] == lg {
		l.legs[lg.fd] = nil
	}
	if lg.sock != nil {
		lg.sock.stopTracking() // a TLS leg that never moved: its secrets go
	}
	closeFD(lg.fd)
	lg.fd = -1
}

// setInterest makes the epoll set watch lg for events (0: not at all).
// Level-triggered: an event repeats while the condition holds, so bytes
// left unread bring the loop back without a read that finds EAGAIN.
func (l *loop) setInterest(lg *evLeg, events uint32) {
	if lg.fd < 0 || events == lg.interest {
		return
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(lg.fd), Pad: lg.gen}
	var err error
	switch {
	case events == 0:
		// EPOLLHUP and EPOLLERR are reported even with no interest: a
		// socket the loop does not want to hear from must leave the set.
		err = epollCtl(l.epfd, unix.EPOLL_CTL_DEL, lg.fd, &ev)
	case lg.interest == 0:
		err = epollCtl(l.epfd, unix.EPOLL_CTL_ADD, lg.fd, &ev)
	default:
		err = epollCtl(l.epfd, unix.EPOLL_CTL_MOD, lg.fd, &ev)
	}
	if err == nil {
		lg.interest = events
	}
}

// detach takes a plain TCP connection away from Go's poller: it duplicates
// the descriptor (which shares the open socket, already non-blocking) and
// closes the net.Conn, whose close deregisters it from the runtime's epoll
// set. Costs: one fcntl, one epoll_ctl and one close, against a second
// registration that would wake Go's poller for every event of the loop's.
func detach(c net.Conn) (int, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return -1, false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return -1, false
	}
	fd := -1
	raw.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil || fd < 0 {
		return -1, false
	}
	tc.Close()
	return fd, true
}

// canDetach reports whether c is a connection the loops can take over.
func canDetach(c net.Conn) bool {
	_, ok := c.(*net.TCPConn)
	return ok
}

// readFD reads once, retrying only EINTR.
func readFD(fd int, p []byte) (int, error) {
	for {
		n, err := rawIO(unix.SYS_READ, fd, p)
		if err == syscall.EINTR {
			continue
		}
		return n, err
	}
}

// rawIO reads or writes a non-blocking socket without telling the
// scheduler: such a call cannot block, so the bookkeeping of an ordinary
// system call (entering and leaving the syscall state, under which the
// runtime's monitor may take the loop's P) is cost with no use, paid twice
// per forwarded message. A nil error is returned as nil, not Errno(0).
func rawIO(trap uintptr, fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	r, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// writeFD writes once without waiting; a full socket is 0, nil.
func writeFD(fd int, p []byte) (int, error) {
	for {
		n, err := rawIO(unix.SYS_WRITE, fd, p)
		switch err {
		case nil:
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, nil
		}
		return 0, err
	}
}

// sendMore writes like writeFD, telling the kernel more follows at once
// (MSG_MORE): what is not a full segment waits in the socket for the next
// write or the close, whose FIN then goes out in the same segment.
func sendMore(fd int, p []byte) (int, error) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), unix.MSG_MORE|unix.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, nil
		}
		return 0, e
	}
}

// pollNow asks for ready events without waiting. A loop that just had
// events usually has more: a blocking epoll_wait would put its thread in
// the syscall state, where the runtime's monitor takes its P away (and
// wakes every 20 µs to do so) and the loop must get one back when it
// returns. A raw call that cannot block keeps the P; only when it finds
// nothing does the loop wait the ordinary way.
func pollNow(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		if e == unix.EINTR {
			return 0, nil
		}
		return 0, e
	}
	return int(r), nil
}
