package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPU time is read from /proc, in USER_HZ ticks (100 per second here; the
// kernel samples at CONFIG_HZ and reports in USER_HZ).
const userHZ = 100

// tickDur is one USER_HZ tick.
const tickDur = time.Second / userHZ

// procCPU returns a process's user+system time (all its threads) from
// /proc/PID/stat. System time includes the softirq work the kernel did
// while the process was running (sending into a veth runs the peer's NAPI
// on the sender's way out of the syscall): this kernel has no
// IRQ_TIME_ACCOUNTING, so such time is charged to the interrupted task.
func procCPU(pid int) (time.Duration, error) {
	return statCPU(fmt.Sprintf("/proc/%d/stat", pid))
}

// threadCPU is procCPU for one thread.
func threadCPU(pid, tid int) (time.Duration, error) {
	return statCPU(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
}

func statCPU(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it are
	// counted from its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no command name", path)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: short", path)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%s: bad times", path)
	}
	return time.Duration(ut+st) * tickDur, nil
}

// SysCPU is the machine-wide time from /proc/stat's "cpu" line.
type SysCPU struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal time.Duration
}

// Busy is all non-idle time except steal (time the hypervisor gave to
// someone else).
func (s SysCPU) Busy() time.Duration {
	return s.User + s.Nice + s.System + s.IRQ + s.SoftIRQ
}

// Kernel is system, irq and softirq time: where a kernel switch (bridge,
// XDP redirect) spends its cycles.
func (s SysCPU) Kernel() time.Duration { return s.System + s.IRQ + s.SoftIRQ }

// Sub returns s-o.
func (s SysCPU) Sub(o SysCPU) SysCPU {
	return SysCPU{s.User - o.User, s.Nice - o.Nice, s.System - o.System, s.Idle - o.Idle,
		s.IOWait - o.IOWait, s.IRQ - o.IRQ, s.SoftIRQ - o.SoftIRQ, s.Steal - o.Steal}
}

func readSysCPU() (SysCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return SysCPU{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return SysCPU{}, fmt.Errorf("/proc/stat: unexpected %q", line)
	}
	v := make([]time.Duration, 8)
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return SysCPU{}, fmt.Errorf("/proc/stat: %w", err)
		}
		v[i] = time.Duration(n) * tickDur
	}
	return SysCPU{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}, nil
}

// Memory is a process's resident memory, from /proc/PID/status.
type Memory struct {
	RSS, HWM, Locked int64 // bytes
}

func procMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) < 1 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			m.RSS = n << 10
		case "VmHWM":
			m.HWM = n << 10
		case "VmLck":
			m.Locked = n << 10
		}
	}
	return m, nil
}

// cpuModel is the machine's CPU model name.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
