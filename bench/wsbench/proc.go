package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// procSample is the memory and CPU time of a set of processes at one moment.
type procSample struct {
	RSSKiB     int64   // sum of VmRSS
	CPUSeconds float64 // sum of utime+stime
	Procs      int     // processes counted
}

// sampleTree sums VmRSS and CPU time over each root PID and all of its
// descendants (nginx's or HAProxy's workers, for instance). A process that
// exits between listing and reading is skipped. With no roots it returns a
// zero sample.
func sampleTree(roots []int) (procSample, error) {
	var s procSample
	if len(roots) == 0 {
		return s, nil
	}
	pids, err := descendants(roots)
	if err != nil {
		return s, err
	}
	for _, pid := range pids {
		rss, cpu, err := readProc(pid)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return s, err
		}
		s.RSSKiB += rss
		s.CPUSeconds += cpu
		s.Procs++
	}
	if s.Procs == 0 {
		return s, fmt.Errorf("no process left of PIDs %v", roots)
	}
	return s, nil
}

// sampleSelf samples this process.
func sampleSelf() (procSample, error) {
	rss, cpu, err := readProc(os.Getpid())
	return procSample{RSSKiB: rss, CPUSeconds: cpu, Procs: 1}, err
}

// descendants returns roots and every process below them, from the parent
// PIDs in /proc/*/stat.
func descendants(roots []int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f, err := statFields(stat)
		if err != nil {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	seen := map[int]bool{}
	var out []int
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		out = append(out, pid)
		queue = append(queue, children[pid]...)
	}
	return out, nil
}

// readProc returns one process's VmRSS in KiB and its user+system CPU
// seconds.
func readProc(pid int) (rssKiB int64, cpu float64, err error) {
	dir := "/proc/" + strconv.Itoa(pid)
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			v := strings.TrimSuffix(strings.TrimSpace(rest), " kB")
			if rssKiB, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
				return 0, 0, fmt.Errorf("%s/status: VmRSS %q: %v", dir, rest, err)
			}
			break
		}
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0, 0, err
	}
	f, err := statFields(stat)
	if err != nil {
		return 0, 0, fmt.Errorf("%s/stat: %v", dir, err)
	}
	// After the command: state(0) ppid(1) ... utime(11) stime(12).
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%s/stat: bad utime/stime %q %q", dir, f[11], f[12])
	}
	return rssKiB, float64(utime+stime) / clockTicks, nil
}

// statFields returns the fields of /proc/PID/stat after the command name
// (which is in parentheses and may contain spaces), starting with state.
func statFields(stat []byte) ([]string, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return nil, fmt.Errorf("%d fields", len(f))
	}
	return f, nil
}

// machineCPU is the machine's cumulative CPU time since boot, in seconds
// summed over all CPUs.
type machineCPU struct {
	busy  float64 // user, nice, system, irq and softirq
	steal float64 // time the hypervisor gave this VM's CPUs to someone else
}

// machineTimes reads the first line of /proc/stat. Interrupt and softirq
// time count as busy: without CONFIG_IRQ_TIME_ACCOUNTING (the common case)
// a tick that lands in a softirq is charged both to the interrupted task's
// stime and to the machine's softirq column, so leaving softirq out made
// the machine look less busy than the processes on it and "everything
// else" clamp at zero. With it included, machine − measured processes is
// the CPU that other work took (plus, with irq-time accounting, the
// loopback softirq no task is charged for).
func machineTimes() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	// cpu user nice system idle iowait irq softirq steal ...
	var v [8]int64
	for i := range v {
		n, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("/proc/stat: %q: %v", f[i+1], err)
		}
		v[i] = n
	}
	busy := v[0] + v[1] + v[2] + v[5] + v[6]
	return machineCPU{busy: float64(busy) / clockTicks, steal: float64(v[7]) / clockTicks}, nil
}
