package loadgen

import (
	"crypto/sha256"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// The command name may contain spaces and parentheses.
	line := "4242 (my (weird) cmd) S 1 4242 4242 0 -1 4194560 1234 0 0 0 1500 250 0 0 20 0 12 0 987654 123456789 4567 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	ut, st, err := parseStat([]byte(line))
	if err != nil || ut != 1500 || st != 250 {
		t.Fatalf("parseStat = %d, %d, %v; want 1500, 250, nil", ut, st, err)
	}
	for _, bad := range []string{"", "1 cmd S 1", "1 (cmd) S 1 2 3", "1 (cmd) S 1 1 1 0 -1 4194560 0 0 0 0 x 250 0"} {
		if _, _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}
}

func TestCPUTimeOfThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux-only")
	}
	// The reference is the kernel's own account of this process
	// (getrusage), not the wall clock, which says nothing about CPU time
	// on a busy machine.
	rusage := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	u0, s0, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	r0 := rusage()
	sum := sha256.Sum256(nil)
	for rusage()-r0 < 150*time.Millisecond {
		for range 10000 {
			sum = sha256.Sum256(sum[:])
		}
	}
	u1, s1, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ref := rusage() - r0
	// /proc/<pid>/stat counts in clock ticks (10ms): allow two ticks and
	// what the other goroutines of the test binary burn meanwhile.
	if d := (u1 + s1) - (u0 + s0); d < ref-20*time.Millisecond || d > ref+ref/2+20*time.Millisecond {
		t.Errorf("CPU time grew by %v while getrusage counted %v", d, ref)
	}
}

func TestReadMemoryOfThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux-only")
	}
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS < 1<<20 || m.PeakRSS < m.RSS {
		t.Errorf("RSS %d, peak %d: want RSS ≥ 1 MiB and peak ≥ RSS", m.RSS, m.PeakRSS)
	}
	if _, err := ReadMemory(-1); err == nil {
		t.Error("ReadMemory(-1) succeeded")
	}
	la, err := LoadAverage()
	if err != nil || la[0] < 0 {
		t.Errorf("LoadAverage = %v, %v", la, err)
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tmcpauthz\nVmPeak:\t 1300000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   32768 kB\nThreads:\t8\n"
	m, err := parseStatus([]byte(status))
	if err != nil || m.PeakRSS != 40<<20 || m.RSS != 32<<20 {
		t.Fatalf("parseStatus = %+v, %v", m, err)
	}
	if _, err := parseStatus([]byte("Name:\tkthreadd\nThreads:\t1\n")); err == nil {
		t.Error("a status without VmRSS/VmHWM must fail")
	}
	if _, err := parseStatus([]byte("VmHWM:\t12 MB\nVmRSS:\t1 kB\n")); err == nil {
		t.Error("a unit other than kB must fail")
	}
}

func TestParseCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
	if got := parseCPUModel([]byte(info)); got != "AMD EPYC 7B13" {
		t.Errorf("parseCPUModel = %q", got)
	}
	if got := parseCPUModel([]byte("processor : 0\n")); got != "" {
		t.Errorf("parseCPUModel without a model = %q", got)
	}
}
