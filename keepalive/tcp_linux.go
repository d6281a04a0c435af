package keepalive

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// setOpts sets o on socket fd; o has been validated.
func setOpts(fd uintptr, o TCP) error {
	s := int(fd)
	if o.Idle < 0 {
		if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0); err != nil {
			return os.NewSyscallError("setsockopt SO_KEEPALIVE", err)
		}
	} else {
		if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_KEEPALIVE", err)
		}
		if o.Idle > 0 {
			if err := unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, seconds(o.Idle)); err != nil {
				return os.NewSyscallError("setsockopt TCP_KEEPIDLE", err)
			}
		}
		if o.Interval > 0 {
			if err := unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, seconds(o.Interval)); err != nil {
				return os.NewSyscallError("setsockopt TCP_KEEPINTVL", err)
			}
		}
		if o.Count > 0 {
			if err := unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, o.Count); err != nil {
				return os.NewSyscallError("setsockopt TCP_KEEPCNT", err)
			}
		}
	}
	return setUserTimeout(fd, o)
}

// setUserTimeout sets TCP_USER_TIMEOUT if o has one (-1: off).
func setUserTimeout(fd uintptr, o TCP) error {
	s := int(fd)
	if o.UserTimeout != 0 {
		ms := 0
		if o.UserTimeout > 0 {
			ms = millis(o.UserTimeout)
		}
		if err := unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms); err != nil {
			return os.NewSyscallError("setsockopt TCP_USER_TIMEOUT", err)
		}
	}
	return nil
}

// getOpts reads the options of socket fd.
func getOpts(fd uintptr) (o TCP, enabled bool, err error) {
	s := int(fd)
	var v int
	if v, err = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_KEEPALIVE); err != nil {
		return o, false, os.NewSyscallError("getsockopt SO_KEEPALIVE", err)
	}
	enabled = v != 0
	if v, err = unix.GetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); err != nil {
		return o, false, os.NewSyscallError("getsockopt TCP_KEEPIDLE", err)
	}
	o.Idle = time.Duration(v) * time.Second
	if v, err = unix.GetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL); err != nil {
		return o, false, os.NewSyscallError("getsockopt TCP_KEEPINTVL", err)
	}
	o.Interval = time.Duration(v) * time.Second
	if o.Count, err = unix.GetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_KEEPCNT); err != nil {
		return o, false, os.NewSyscallError("getsockopt TCP_KEEPCNT", err)
	}
	if v, err = unix.GetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); err != nil {
		return o, false, os.NewSyscallError("getsockopt TCP_USER_TIMEOUT", err)
	}
	o.UserTimeout = time.Duration(v) * time.Millisecond
	return o, enabled, nil
}
