//go:build linux

package relay

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The calls a loop makes on its sockets outside reads and writes (accept,
// connect, epoll_ctl, close, setsockopt) cannot block either: every socket
// is non-blocking, and a close without SO_LINGER returns at once. They are
// made raw, as rawIO makes reads and writes, and with the addresses on the
// stack: x/sys/unix's wrappers pay the scheduler's syscall bookkeeping,
// allocate a Sockaddr per accept and per connect, and its Accept4 asks
// getsockopt(SO_PROTOCOL) of every IPv4 socket it accepts (to tell L2TP
// apart), a fourth of a system call per handshake spent on nothing.

// acceptRaw accepts one connection as non-blocking and close-on-exec.
func acceptRaw(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	l := uint32(unix.SizeofSockaddrAny)
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(r), rawAddrPort(&rsa), nil
}

// rawAddrPort reads an IPv4 or IPv6 socket address (others are zero).
func rawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), netPort(sa.Port))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), netPort(sa.Port))
	}
	return netip.AddrPort{}
}

// netPort is a port as the kernel stores it (network byte order).
func netPort(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// connectRaw starts connecting fd to ap (IPv4 or IPv6, by ap's address;
// fd must be of the matching family), retrying EINTR.
func connectRaw(fd int, ap netip.AddrPort) error {
	var ptr unsafe.Pointer
	var size uintptr
	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	port := netPort(ap.Port()) // the swap is its own inverse
	if ip := ap.Addr().Unmap(); ip.Is4() {
		sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: port, Addr: ip.As4()}
		ptr, size = unsafe.Pointer(&sa4), unix.SizeofSockaddrInet4
	} else {
		sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: port, Addr: ip.As16()}
		ptr, size = unsafe.Pointer(&sa6), unix.SizeofSockaddrInet6
	}
	for {
		_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(ptr), size)
		switch e {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		}
		return e
	}
}

// epollCtl adds, changes or removes fd's registration.
func epollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// closeFD closes a socket the loop owns.
func closeFD(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// setTCP sets a TCP-level integer socket option on fd (TCP_NODELAY,
// TCP_QUICKACK); a failure leaves the kernel's default, which only costs
// latency.
func setTCP(fd, opt int, v int32) {
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
}
