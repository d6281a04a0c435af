//go:build !linux

package keepalive

import "errors"

func setOpts(fd uintptr, o TCP) error { return errors.ErrUnsupported }

func setUserTimeout(fd uintptr, o TCP) error { return errors.ErrUnsupported }

func getOpts(fd uintptr) (TCP, bool, error) { return TCP{}, false, errors.ErrUnsupported }
