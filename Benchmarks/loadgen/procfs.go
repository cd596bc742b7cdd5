package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// clockTicksPerSecond is sysconf(_SC_CLK_TCK), the unit of utime and stime in
// /proc/PID/stat. It is 100 on every Linux architecture Go supports, and
// reading it properly would need cgo.
const clockTicksPerSecond = 100

// procStat is what loadgen needs from /proc/PID/stat.
type procStat struct {
	pid, ppid int
	cpuTicks  uint64 // utime + stime of all the process's threads
}

// parseProcStat parses one /proc/PID/stat line. The command name (field 2)
// is in parentheses and may itself contain spaces and parentheses, so the
// other fields are counted from the last ')'.
func parseProcStat(line string) (procStat, error) {
	open, end := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("malformed stat line")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line[:open]))
	if err != nil {
		return procStat{}, err
	}
	// rest[0] is field 3 (state), so field k is rest[k-3].
	rest := strings.Fields(line[end+1:])
	if len(rest) < 13 {
		return procStat{}, fmt.Errorf("short stat line")
	}
	ppid, err1 := strconv.Atoi(rest[4-3])
	utime, err2 := strconv.ParseUint(rest[14-3], 10, 64)
	stime, err3 := strconv.ParseUint(rest[15-3], 10, 64)
	for _, e := range []error{err1, err2, err3} {
		if e != nil {
			return procStat{}, e
		}
	}
	return procStat{pid: pid, ppid: ppid, cpuTicks: utime + stime}, nil
}

// processTree returns root and all its descendants (by the ppid links of
// every process in /proc), with their stat. Processes that exit while /proc
// is being read are skipped.
func processTree(root int) ([]procStat, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	byPid := make(map[int]procStat)
	children := make(map[int][]int)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a process directory
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		st, err := parseProcStat(string(data))
		if err != nil {
			continue
		}
		byPid[pid] = st
		children[st.ppid] = append(children[st.ppid], pid)
	}
	if _, ok := byPid[root]; !ok {
		return nil, fmt.Errorf("process %d is gone", root)
	}
	var tree []procStat
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		tree = append(tree, byPid[pid])
		queue = append(queue, children[pid]...)
	}
	return tree, nil
}

// treeCPUSeconds is the user+system CPU time of root and its descendants.
func treeCPUSeconds(root int) (float64, error) {
	tree, err := processTree(root)
	if err != nil {
		return 0, err
	}
	var ticks uint64
	for _, p := range tree {
		ticks += p.cpuTicks
	}
	return float64(ticks) / clockTicksPerSecond, nil
}

// treeRSSKB is the VmRSS of root and its descendants, in kB. Pages shared
// between them count once per process, as VmRSS does.
func treeRSSKB(root int) (int64, error) {
	tree, err := processTree(root)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, p := range tree {
		kb, err := vmRSSKB(p.pid)
		if err != nil {
			if p.pid == root {
				return 0, err
			}
			continue // a child that exited meanwhile
		}
		total += kb
	}
	return total, nil
}

// vmRSSKB reads the VmRSS line of /proc/PID/status.
func vmRSSKB(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "VmRSS:" {
			return strconv.ParseInt(fields[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS (a kernel thread or a zombie?)", pid)
}

// cpuMeter measures the target's CPU time over a phase; the zero value (no
// -pid) measures nothing.
type cpuMeter struct {
	pid    int
	before float64
	ok     bool
}

func startCPUMeter(pid int) *cpuMeter {
	m := &cpuMeter{pid: pid}
	if pid == 0 {
		return m
	}
	before, err := treeCPUSeconds(pid)
	if err != nil {
		warnf("-pid %d: %v; no CPU figures", pid, err)
		return m
	}
	m.before, m.ok = before, true
	return m
}

// stop returns the CPU seconds used since start, or ok=false when unknown.
func (m *cpuMeter) stop() (seconds float64, ok bool) {
	if !m.ok {
		return 0, false
	}
	after, err := treeCPUSeconds(m.pid)
	if err != nil {
		warnf("-pid %d: %v; no CPU figures", m.pid, err)
		return 0, false
	}
	return after - m.before, true
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit (Go 1.19+
// does this for the os package already; being explicit keeps it true on any
// toolchain) and returns the resulting soft limit.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}
