package inventory

import "testing"

func TestHash(t *testing.T) {
	d := Device{Hostname: "h", MachineID: "m", OSID: "debian", OSVersionID: "12", OSName: "Debian", Kernel: "6.1", Arch: "x86_64"}
	libc := Module{BuildID: "aa", Path: "/usr/lib/libc.so.6", Package: "libc6:amd64 2.36"}
	sh := Module{BuildID: "bb", Path: "/usr/bin/sh", Package: "dash:amd64 0.5"}
	base := []Process{
		{Pid: 10, StartTime: 100, Comm: "sh", Modules: []Module{sh, libc}},
		{Pid: 11, StartTime: 101, Comm: "sh", Modules: []Module{sh, libc}},
	}
	h := Hash(d, base)

	same := map[string][]Process{
		"other pids and start times": {
			{Pid: 20, StartTime: 900, Comm: "sh", Modules: []Module{sh, libc}},
			{Pid: 21, StartTime: 901, Comm: "sh", Modules: []Module{libc, sh}},
		},
		"fewer processes mapping the same modules": {{Pid: 10, Modules: []Module{libc, sh}}},
		"modules spread over processes":            {{Pid: 1, Modules: []Module{libc}}, {Pid: 2, Modules: []Module{sh}}},
	}
	for name, ps := range same {
		if got := Hash(d, ps); got != h {
			t.Errorf("%s changed the hash", name)
		}
	}

	changed := map[string]func() (Device, []Process){
		"a package upgrade": func() (Device, []Process) {
			m := libc
			m.Package = "libc6:amd64 2.37"
			return d, []Process{{Modules: []Module{sh, m}}}
		},
		"a new build-id": func() (Device, []Process) {
			m := libc
			m.BuildID = "ac"
			return d, []Process{{Modules: []Module{sh, m}}}
		},
		"a deleted file": func() (Device, []Process) {
			m := libc
			m.Path += " (deleted)"
			return d, []Process{{Modules: []Module{sh, m}}}
		},
		"a new module": func() (Device, []Process) {
			return d, []Process{{Modules: []Module{sh, libc, {BuildID: "cc", Path: "/x"}}}}
		},
		"a kernel update": func() (Device, []Process) {
			d2 := d
			d2.Kernel = "6.2"
			return d2, base
		},
		"fields shifted between build-id and path": func() (Device, []Process) {
			return d, []Process{{Modules: []Module{sh, {BuildID: "aa/usr/lib", Path: "/libc.so.6", Package: libc.Package}}}}
		},
	}
	for name, f := range changed {
		if got := Hash(f()); got == h {
			t.Errorf("%s did not change the hash", name)
		}
	}
	if len(h) != 64 {
		t.Errorf("hash %q is not 64 hex digits", h)
	}
}
