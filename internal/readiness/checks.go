package readiness

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// capSysPtrace is CAP_SYS_PTRACE's bit in the capability sets.
	capSysPtrace = 19
	// maxStateEntries bounds the clock check's look at the state dir: the
	// agent keeps a handful of files there, and a directory flooded by
	// something else must not stall the check.
	maxStateEntries = 4096
	// clockSkewAllowed is how far in the future a state file may seem before
	// the clock is judged to have jumped back: more than a day is not drift.
	clockSkewAllowed = 24 * time.Hour
)

// clockFloor is a date every real clock is past: hotfleet did not exist
// before it, so an earlier clock is unset (no RTC, no NTP yet).
var clockFloor = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func fail(name, detail, reason, action string) Check {
	return Check{Name: name, Detail: detail, Reason: reason, Action: action}
}

func (s sys) checkArch() Check {
	const name = "arch"
	m, _, err := s.machine()
	if err != nil {
		return fail(name, "", "uname failed: "+err.Error(), "report this to the hotfleet developers with the kernel version")
	}
	switch m {
	case "x86_64":
		return Check{Name: name, OK: true, Detail: m}
	case "aarch64", "arm64":
		return fail(name, m, "64-bit Arm ("+m+") is not yet supported: the patcher only writes x86-64 code",
			"keep this device on package updates and restarts until a hotfleet release supports arm64")
	default:
		return fail(name, m, "the "+m+" architecture is not supported by hotfleet",
			"keep this device on package updates and restarts; hotfleet hot patches x86-64 devices only")
	}
}

// checkCapability reads CapEff of this process. Without CAP_SYS_PTRACE the
// kernel only lets us attach to processes of our own user that hold no
// capability we lack, which excludes every system service.
func (s sys) checkCapability() (Check, bool) {
	const name = "ptrace-capability"
	const action = "run the agent as root with CAP_SYS_PTRACE in its capability bounding set (systemd: do not drop it with CapabilityBoundingSet=; containers: add --cap-add=SYS_PTRACE)"
	data, err := s.readFile("/proc/self/status")
	if err != nil {
		return fail(name, "", "read /proc/self/status: "+err.Error(), "make sure /proc is mounted in the agent's mount namespace"), false
	}
	var hex string
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			hex = strings.TrimSpace(v)
		}
	}
	if hex == "" {
		return fail(name, "", "/proc/self/status has no CapEff line", "make sure /proc is the kernel's procfs"), false
	}
	caps, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return fail(name, "CapEff="+hex, "cannot parse CapEff "+strconv.Quote(hex), "make sure /proc is the kernel's procfs"), false
	}
	detail := "CapEff=" + hex
	if caps&(1<<capSysPtrace) == 0 {
		return fail(name, detail, "the agent lacks CAP_SYS_PTRACE: it can only patch processes of its own user that hold no more capabilities than it does, so system services stay unpatched", action), false
	}
	return Check{Name: name, OK: true, Detail: detail + " (CAP_SYS_PTRACE)"}, true
}

func (s sys) checkYama(haveCap bool) Check {
	const name = "yama"
	data, err := s.readFile("/proc/sys/kernel/yama/ptrace_scope")
	if errors.Is(err, fs.ErrNotExist) {
		return Check{Name: name, OK: true, Detail: "Yama is not built into this kernel"}
	}
	if err != nil {
		return fail(name, "", "read /proc/sys/kernel/yama/ptrace_scope: "+err.Error(), "make sure /proc/sys is readable by the agent")
	}
	v := strings.TrimSpace(string(data))
	detail := "ptrace_scope=" + v
	switch v {
	case "0", "1":
		return Check{Name: name, OK: true, Detail: detail}
	case "2":
		if haveCap {
			return Check{Name: name, OK: true, Detail: detail + " (admin-only attach; the agent has CAP_SYS_PTRACE)"}
		}
		return fail(name, detail, "Yama allows only CAP_SYS_PTRACE holders to attach (ptrace_scope=2) and the agent lacks it",
			"give the agent CAP_SYS_PTRACE (see the ptrace-capability check)")
	case "3":
		return fail(name, detail, "Yama forbids every ptrace attach (ptrace_scope=3), so no process can be patched",
			"set kernel.yama.ptrace_scope to 2 or lower in /etc/sysctl.d and reboot: scope 3 cannot be lowered while the kernel runs")
	default:
		return fail(name, detail, "unknown Yama ptrace_scope "+strconv.Quote(v), "set kernel.yama.ptrace_scope to 0, 1 or 2 and reboot")
	}
}

func (s sys) checkSELinux() Check {
	const name = "selinux"
	enforce, err := s.readFile("/sys/fs/selinux/enforce")
	if errors.Is(err, fs.ErrNotExist) {
		return Check{Name: name, OK: true, Detail: "SELinux is not enabled"}
	}
	if err != nil {
		return fail(name, "", "read /sys/fs/selinux/enforce: "+err.Error(), "make sure selinuxfs is readable by the agent")
	}
	if strings.TrimSpace(string(enforce)) != "1" {
		return Check{Name: name, OK: true, Detail: "SELinux is permissive"}
	}
	b, err := s.readFile("/sys/fs/selinux/booleans/deny_ptrace")
	if errors.Is(err, fs.ErrNotExist) {
		return Check{Name: name, OK: true, Detail: "SELinux is enforcing; the policy has no deny_ptrace boolean"}
	}
	if err != nil {
		return fail(name, "enforcing", "read /sys/fs/selinux/booleans/deny_ptrace: "+err.Error(), "make sure selinuxfs is readable by the agent")
	}
	// The file holds the current and the pending value; the current one rules.
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return fail(name, "enforcing", "/sys/fs/selinux/booleans/deny_ptrace is empty", "run getsebool deny_ptrace and report the output")
	}
	detail := "enforcing, deny_ptrace=" + strings.Join(f, " ")
	if f[0] == "1" {
		return fail(name, detail, "SELinux is enforcing with deny_ptrace on, which forbids ptrace even to root",
			"run: setsebool -P deny_ptrace 0")
	}
	return Check{Name: name, OK: true, Detail: detail}
}

// checkLockdown reports the kernel lockdown level. No level restricts ptrace
// or /proc/PID/mem access to user processes: integrity mode blocks changing
// the kernel (unsigned modules, /dev/mem, kexec, bpf writes to user memory,
// ...), confidentiality mode additionally blocks reading kernel memory
// (/proc/kcore, kprobes, perf, tracefs). So the check passes at every level and
// only says which one is in force.
func (s sys) checkLockdown() Check {
	const name = "lockdown"
	data, err := s.readFile("/sys/kernel/security/lockdown")
	if errors.Is(err, fs.ErrNotExist) {
		return Check{Name: name, OK: true, Detail: "lockdown is not active (no /sys/kernel/security/lockdown)"}
	}
	if err != nil {
		return Check{Name: name, OK: true, Detail: "lockdown level unreadable (" + err.Error() + "); no level restricts patching user processes"}
	}
	level := "unknown"
	for _, f := range strings.Fields(string(data)) {
		if strings.HasPrefix(f, "[") && strings.HasSuffix(f, "]") {
			level = strings.Trim(f, "[]")
		}
	}
	return Check{Name: name, OK: true, Detail: "lockdown=" + level + " (no level restricts ptrace or /proc/PID/mem of user processes)"}
}

// checkKernel needs 4.4 for what the patcher uses (PTRACE_SEIZE 3.4,
// memfd_create 3.17, ...); below 5.17 patch regions cannot be given an
// anonymous mapping name and show in maps as memfd mappings, which works but
// confuses people reading /proc/PID/maps.
func (s sys) checkKernel() Check {
	const name = "kernel"
	data, err := s.readFile("/proc/sys/kernel/osrelease")
	var rel string
	if err == nil {
		rel = strings.TrimSpace(string(data))
	} else if _, r, uerr := s.machine(); uerr == nil {
		rel = r
	} else {
		return fail(name, "", "read the kernel release: "+err.Error(), "make sure /proc is mounted in the agent's mount namespace")
	}
	major, minor, ok := parseRelease(rel)
	if !ok {
		return fail(name, rel, "cannot parse the kernel release "+strconv.Quote(rel), "report this release string to the hotfleet developers")
	}
	switch {
	case major < 4 || major == 4 && minor < 4:
		return fail(name, rel, "kernel "+rel+" is older than 4.4, which hotfleet needs (PTRACE_SEIZE, memfd_create)",
			"upgrade the kernel to 4.4 or later (5.17 or later recommended)")
	case major < 5 || major == 5 && minor < 17:
		return Check{Name: name, OK: true, Detail: rel,
			Reason: "kernel " + rel + " is older than 5.17: patch regions cannot be named and show in /proc/PID/maps as memfd mappings"}
	}
	return Check{Name: name, OK: true, Detail: rel}
}

func parseRelease(rel string) (major, minor int, ok bool) {
	end := strings.IndexFunc(rel, func(r rune) bool { return r != '.' && (r < '0' || r > '9') })
	if end >= 0 {
		rel = rel[:end]
	}
	parts := strings.Split(rel, ".")
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	return major, minor, err1 == nil && err2 == nil
}

// existingParent is dir or its nearest ancestor that exists: the agent
// creates its state dir on first start, and readiness may be asked before.
func existingParent(dir string) string {
	dir = filepath.Clean(dir)
	for {
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			return dir
		}
		dir = up
	}
}

func (s sys) checkDisk(stateDir string, minFree uint64) Check {
	const name = "disk"
	at := existingParent(stateDir)
	var st unix.Statfs_t
	if err := unix.Statfs(at, &st); err != nil {
		return fail(name, at, "statfs "+at+": "+err.Error(), "make sure the state directory "+stateDir+" is on a mounted filesystem")
	}
	free := st.Bavail * uint64(st.Bsize)
	detail := humanBytes(free) + " free on " + at
	if st.Flags&unix.ST_RDONLY != 0 {
		return fail(name, detail, "the filesystem holding "+stateDir+" is mounted read-only, so the agent cannot record what it applied",
			"put the state directory on a writable filesystem (set the agent's state dir, or remount "+at+" read-write)")
	}
	if free < minFree {
		return fail(name, detail, fmt.Sprintf("only %s free for the state directory %s, %s needed", humanBytes(free), stateDir, humanBytes(minFree)),
			"free space on the filesystem holding "+at+", or point the agent's state dir elsewhere")
	}
	return Check{Name: name, OK: true, Detail: detail}
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// checkClock catches a clock that is unset or has jumped back: bundle
// signatures carry validity times and rollouts carry deadlines, and both are
// judged by this clock.
func (s sys) checkClock(stateDir string) Check {
	const name = "clock"
	const action = "set the clock right (enable NTP: timedatectl set-ntp true) and check the RTC battery"
	now := s.now()
	if now.Before(clockFloor) {
		return fail(name, "now "+now.UTC().Format(time.RFC3339),
			"the wall clock says "+now.UTC().Format(time.RFC3339)+", before "+clockFloor.Format("2006-01-02")+": it is not set", action)
	}
	newest, path, n := newestMtime(stateDir)
	if n == 0 {
		return Check{Name: name, OK: true, Detail: "wall clock after " + clockFloor.Format("2006-01-02") + "; no state files yet"}
	}
	if ahead := newest.Sub(now); ahead > clockSkewAllowed {
		return fail(name, path+" modified "+newest.UTC().Format(time.RFC3339),
			fmt.Sprintf("the wall clock is %s behind the newest state file %s: it jumped back", ahead.Round(time.Minute), path), action)
	}
	return Check{Name: name, OK: true, Detail: "wall clock after " + clockFloor.Format("2006-01-02") + " and not behind the state files"}
}

// newestMtime returns the newest modification time among dir and its direct
// entries, the entry's path and how many were looked at.
func newestMtime(dir string) (time.Time, string, int) {
	var newest time.Time
	var path string
	n := 0
	consider := func(p string, fi fs.FileInfo) {
		n++
		if fi.ModTime().After(newest) {
			newest, path = fi.ModTime(), p
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return newest, path, 0
	}
	consider(dir, fi)
	f, err := os.Open(dir)
	if err != nil {
		return newest, path, n
	}
	defer f.Close()
	entries, _ := f.ReadDir(maxStateEntries)
	for _, e := range entries {
		if info, err := e.Info(); err == nil {
			consider(filepath.Join(dir, e.Name()), info)
		}
	}
	return newest, path, n
}
