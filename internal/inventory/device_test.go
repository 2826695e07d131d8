package inventory

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestParseOSRelease reads the os-release files in testdata: shell quoting,
// comments, lines that are not assignments, keys that are missing.
func TestParseOSRelease(t *testing.T) {
	for _, tc := range []struct {
		file string
		want map[string]string // keys to check; "" means absent
	}{
		{"debian", map[string]string{"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)", "VERSION_CODENAME": "bookworm"}},
		{"quoting", map[string]string{
			"ID":          "single quoted",
			"VERSION_ID":  "1.2 3",
			"PRETTY_NAME": "Escaped \"quotes\", a $dollar, a \\backslash and a `tick`",
			"NAME":        "", // the quote is never closed: the line is invalid
		}},
		{"missing", map[string]string{"ID": "minimal", "NAME": "Minimal", "VERSION_ID": "", "PRETTY_NAME": "", "1BAD": "", "ID_LIKE": "debian"}},
		{"crlf", map[string]string{"ID": "crlf", "VERSION_ID": "7"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "os-release", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got := parseOSRelease(data)
			for k, want := range tc.want {
				if v, ok := got[k]; v != want || ok != (want != "") {
					t.Errorf("%s = %q (present %v), want %q", k, v, ok, want)
				}
			}
		})
	}
}

// TestReadDevice compares ReadDevice with what the shell, the kernel and
// the machine-id file say.
func TestReadDevice(t *testing.T) {
	d, err := ReadDevice()
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if want := read("/proc/sys/kernel/hostname"); d.Hostname != want {
		t.Errorf("hostname %q, want %q", d.Hostname, want)
	}
	if want := read("/proc/sys/kernel/osrelease"); d.Kernel != want {
		t.Errorf("kernel %q, want %q", d.Kernel, want)
	}
	if want := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]; want != "" && d.Arch != want {
		t.Errorf("arch %q, want %q", d.Arch, want)
	}
	if id, err := os.ReadFile("/etc/machine-id"); err == nil && d.MachineID != strings.TrimSpace(string(id)) {
		t.Errorf("machine-id %q, want %q", d.MachineID, id)
	}
	if len(d.MachineID) != 32 {
		t.Errorf("machine-id %q is not 32 hex digits", d.MachineID)
	}
	osr := "/etc/os-release"
	if _, err := os.Stat(osr); err != nil {
		osr = "/usr/lib/os-release"
	}
	out, err := exec.Command("sh", "-c", `. "$1"; printf '%s\n%s\n%s' "$ID" "$VERSION_ID" "$PRETTY_NAME"`, "sh", osr).Output()
	if err != nil {
		t.Skipf("cannot source %s with sh: %v", osr, err)
	}
	if got, want := d.OSID+"\n"+d.OSVersionID+"\n"+d.OSName, string(out); got != want || d.OSID == "" {
		t.Errorf("os-release fields %q, the shell says %q", got, want)
	}
}
