package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Device describes the machine the agent runs on.
type Device struct {
	Hostname, MachineID       string // /etc/machine-id (fallback /var/lib/dbus/machine-id)
	OSID, OSVersionID, OSName string // os-release ID, VERSION_ID, PRETTY_NAME (/etc/os-release, fallback /usr/lib/os-release)
	Kernel                    string // uname release
	Arch                      string // "x86_64", "aarch64" (uname machine)
}

// maxSmallFile bounds machine-id and os-release: both are a few hundred bytes,
// and a file far larger is not what it claims to be.
const maxSmallFile = 64 << 10

var (
	machineIDFiles = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}
	osReleaseFiles = []string{"/etc/os-release", "/usr/lib/os-release"}
)

// ReadDevice reads the device's identity. A missing machine-id is an error
// (the device cannot be told apart from others); the Device returned with it
// still holds everything else that could be read. A missing os-release
// leaves the OS fields empty: minimal images ship without one.
func ReadDevice() (Device, error) {
	var d Device
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return d, fmt.Errorf("read device identity: uname: %w", err)
	}
	d.Hostname = unix.ByteSliceToString(uts.Nodename[:])
	d.Kernel = unix.ByteSliceToString(uts.Release[:])
	d.Arch = unix.ByteSliceToString(uts.Machine[:])

	if data, _, err := readFirst(osReleaseFiles); err == nil {
		kv := parseOSRelease(data)
		d.OSID, d.OSVersionID, d.OSName = kv["ID"], kv["VERSION_ID"], kv["PRETTY_NAME"]
	}

	data, path, err := readFirst(machineIDFiles)
	if err != nil {
		return d, fmt.Errorf("read device identity: %w; create one with systemd-machine-id-setup or dbus-uuidgen --ensure", err)
	}
	d.MachineID = strings.TrimSpace(string(data))
	if d.MachineID == "" {
		return d, fmt.Errorf("read device identity: %s is empty; create one with systemd-machine-id-setup", path)
	}
	return d, nil
}

// readFirst reads the first of paths that exists.
func readFirst(paths []string) ([]byte, string, error) {
	var errs []error
	for _, p := range paths {
		data, err := readSmallFile(p)
		if err == nil {
			return data, p, nil
		}
		errs = append(errs, err)
		if !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	return nil, "", errors.Join(errs...)
}

func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, maxSmallFile+1)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if n > maxSmallFile {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, maxSmallFile)
	}
	return buf[:n], nil
}

// parseOSRelease parses os-release(5): KEY=value lines, values optionally
// quoted in shell style, '#' comments. Lines that are not assignments are
// ignored, as the format asks readers to do.
func parseOSRelease(data []byte) map[string]string {
	kv := make(map[string]string)
	for len(data) > 0 {
		var line []byte
		line, data = nextLine(data)
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		k, v, ok := bytes.Cut(line, []byte("="))
		if !ok || !validKey(k) {
			continue
		}
		val, ok := unquote(v)
		if !ok {
			continue
		}
		kv[string(k)] = val
	}
	return kv
}

func validKey(k []byte) bool {
	if len(k) == 0 {
		return false
	}
	for i, c := range k {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// unquote undoes shell quoting of one os-release value: double quotes with
// backslash escapes of $ " \ `, single quotes verbatim, or a bare word with
// backslash escapes. A quote left open makes the value invalid.
func unquote(v []byte) (string, bool) {
	var out strings.Builder
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '"':
			i++
			for ; i < len(v) && v[i] != '"'; i++ {
				if v[i] == '\\' && i+1 < len(v) && strings.IndexByte("$\"\\`", v[i+1]) >= 0 {
					i++
				}
				out.WriteByte(v[i])
			}
			if i >= len(v) {
				return "", false
			}
		case '\'':
			j := bytes.IndexByte(v[i+1:], '\'')
			if j < 0 {
				return "", false
			}
			out.Write(v[i+1 : i+1+j])
			i += j + 1
		case '\\':
			if i+1 < len(v) {
				i++
				out.WriteByte(v[i])
			}
		case ' ', '\t':
			// An unquoted blank ends the value; whatever follows (a comment,
			// or a command a shell would run) is not part of it.
			return out.String(), true
		default:
			out.WriteByte(c)
		}
	}
	return out.String(), true
}
