package inventory

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

const (
	// maxPkgMemo bounds the per-path answers kept between index rebuilds;
	// a device maps a few thousand distinct files.
	maxPkgMemo = 1 << 14
	// maxLinkDepth bounds symlink resolution, as the kernel's MAXSYMLINKS.
	maxLinkDepth = 40
	// rpmTimeout bounds one `rpm -qf`; a locked database makes rpm wait.
	rpmTimeout = 10 * time.Second
	// maxStatusBytes bounds /var/lib/dpkg/status: a few MB on a full desktop.
	maxStatusBytes = 256 << 20
)

// packageDB answers which host package owns a file. Debian's database is
// indexed once, lazily, and re-indexed when /var/lib/dpkg/info or
// /var/lib/dpkg/status changes; rpm is asked per path, with the answers
// kept until its database changes.
type packageDB struct {
	log     *slog.Logger
	root    string // prefix for every host path; "" in production, a temp dir in tests
	dpkgDir string
	rpmDir  string
	rpmBin  string // "" when rpm is not usable

	mu      sync.Mutex
	stamp   [4]int64 // mtimes of dpkg/info, dpkg/status, dpkg/diversions, the rpm database
	idx     *dpkgIndex
	idxErr  error
	memo    map[string]string
	dpkgOK  bool
	rpmSeen bool
}

func newPackageDB(log *slog.Logger) *packageDB {
	db := &packageDB{log: log, dpkgDir: "/var/lib/dpkg", rpmDir: "/var/lib/rpm", memo: make(map[string]string)}
	if fi, err := os.Stat(db.rpmDir); err == nil && fi.IsDir() {
		if bin, err := exec.LookPath("rpm"); err == nil {
			db.rpmBin = bin
		}
	}
	return db
}

func mtime(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.ModTime().UnixNano()
}

// refresh forgets everything when a database changed since the last call.
// It costs two or three stats; a scan calls it once.
func (db *packageDB) refresh() {
	stamp := [4]int64{
		mtime(db.root + db.dpkgDir + "/info"),
		mtime(db.root + db.dpkgDir + "/status"),
		mtime(db.root + db.dpkgDir + "/diversions"),
	}
	if db.rpmBin != "" {
		stamp[3] = max(mtime(db.root+db.rpmDir+"/rpmdb.sqlite"), mtime(db.root+db.rpmDir+"/Packages"))
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if stamp != db.stamp {
		db.stamp = stamp
		db.idx, db.idxErr = nil, nil
		db.dpkgOK = stamp[1] != 0
		db.memo = make(map[string]string)
	}
}

// lookup returns the package owning the host file at p (a canonical path,
// as maps shows it), as "name:arch version", or "" when unknown.
func (db *packageDB) lookup(ctx context.Context, p string) string {
	db.mu.Lock()
	defer db.mu.Unlock()
	if v, ok := db.memo[p]; ok {
		return v
	}
	var label string
	if db.dpkgOK {
		if db.idx == nil && db.idxErr == nil {
			start := time.Now()
			db.idx, db.idxErr = buildDpkgIndex(db.root, db.dpkgDir)
			if db.idxErr != nil {
				db.log.Warn("inventory: cannot index the dpkg database; modules get no package names", "err", db.idxErr)
			} else {
				db.log.Debug("inventory: dpkg database indexed", "files", len(db.idx.hashes), "took", time.Since(start))
			}
		}
		if db.idx != nil {
			label = db.idx.find(p)
		}
	}
	if label == "" && db.rpmBin != "" {
		label = db.rpmOwner(ctx, p)
	}
	if len(db.memo) >= maxPkgMemo {
		db.memo = make(map[string]string)
	}
	db.memo[p] = label
	return label
}

// rpmOwner asks rpm which package owns p.
func (db *packageDB) rpmOwner(ctx context.Context, p string) string {
	ctx, cancel := context.WithTimeout(ctx, rpmTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, db.rpmBin, "-qf", "--queryformat",
		"%{NAME}:%{ARCH} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\n", "--", p).Output()
	if err != nil {
		return "" // not owned, or rpm failed: unknown either way
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// dpkgIndex maps the 64-bit hash of every canonical path listed by an
// installed package to the package. Hashes instead of paths keep the index
// at 12 bytes a file (a desktop lists 100k+ files, 7 MB of path text); two
// paths colliding in 64 bits is far less likely than a corrupted database.
type dpkgIndex struct {
	seed   maphash.Seed
	hashes []uint64 // sorted
	owner  []uint32 // owner[i] indexes labels for hashes[i]
	labels []string // "name:arch version"
	names  []string // package name of each label
	// diverted holds the owners of the paths dpkg-divert moved, which the
	// lists do not tell: the diverting package owns the original path and
	// the package whose file was moved owns the new one.
	diverted map[string]string
}

func (x *dpkgIndex) find(p string) string {
	if label, ok := x.diverted[p]; ok {
		return label
	}
	for _, o := range x.owners(p) {
		return x.labels[o]
	}
	return ""
}

// owners lists the packages whose lists hold the canonical path p.
func (x *dpkgIndex) owners(p string) []uint32 {
	h := maphash.String(x.seed, p)
	i := sort.Search(len(x.hashes), func(i int) bool { return x.hashes[i] >= h })
	j := i
	for j < len(x.hashes) && x.hashes[j] == h {
		j++
	}
	return x.owner[i:j]
}

// applyDiversions reads dpkg's diversions file: records of three lines,
// the diverted path, where the file went, and the package that diverted it
// (":" for a local diversion by the administrator, whose file has no owner).
func (x *dpkgIndex) applyDiversions(data []byte, canon func(string) string) {
	for len(data) > 0 {
		var from, to, pkg []byte
		from, data = nextLine(data)
		to, data = nextLine(data)
		pkg, data = nextLine(data)
		if len(from) == 0 || from[0] != '/' || len(to) == 0 || to[0] != '/' {
			continue
		}
		if x.diverted == nil {
			x.diverted = make(map[string]string)
		}
		cf, ct := canon(string(from)), canon(string(to))
		var mine, other string
		for _, o := range x.owners(cf) {
			if x.names[o] == string(pkg) {
				mine = x.labels[o]
			} else if other == "" {
				other = x.labels[o]
			}
		}
		x.diverted[cf] = mine
		x.diverted[ct] = other
	}
}

type dpkgPkg struct{ arch, version string }

// parseDpkgStatus reads Package, Architecture and Version of every package
// whose files are on disk, keyed by name.
func parseDpkgStatus(data []byte) map[string][]dpkgPkg {
	out := make(map[string][]dpkgPkg)
	var name, arch, version, status string
	flush := func() {
		if name != "" && version != "" && !strings.HasSuffix(status, " not-installed") && !strings.HasSuffix(status, " config-files") {
			out[name] = append(out[name], dpkgPkg{arch: arch, version: version})
		}
		name, arch, version, status = "", "", "", ""
	}
	for len(data) > 0 {
		var line []byte
		line, data = nextLine(data)
		if len(bytes.TrimSpace(line)) == 0 {
			flush()
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // continuation of a multi-line field
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		val := string(bytes.TrimSpace(v))
		switch string(k) {
		case "Package":
			name = val
		case "Architecture":
			arch = val
		case "Version":
			version = val
		case "Status":
			status = val
		}
	}
	flush()
	return out
}

// buildDpkgIndex reads every info/*.list. dpkg lists paths as packages ship
// them (/lib/x86_64-linux-gnu/libc.so.6), while maps shows them resolved
// (/usr/lib/x86_64-linux-gnu/libc.so.6 on a merged-/usr system), so each
// listed directory is resolved through the symlinks on disk, once.
func buildDpkgIndex(root, dir string) (*dpkgIndex, error) {
	status, err := os.ReadFile(root + dir + "/status")
	if err != nil {
		return nil, fmt.Errorf("read dpkg status: %w", err)
	}
	if len(status) > maxStatusBytes {
		return nil, fmt.Errorf("%s/status is larger than %d bytes", dir, maxStatusBytes)
	}
	pkgs := parseDpkgStatus(status)
	ents, err := os.ReadDir(root + dir + "/info")
	if err != nil {
		return nil, fmt.Errorf("list dpkg file lists: %w", err)
	}
	x := &dpkgIndex{seed: maphash.MakeSeed()}
	res := &resolver{root: root, memo: make(map[string]string)}
	type pair struct {
		h uint64
		o uint32
	}
	var pairs []pair
	for _, e := range ents {
		base, ok := strings.CutSuffix(e.Name(), ".list")
		if !ok {
			continue
		}
		name, arch, qualified := strings.Cut(base, ":")
		version := ""
		for _, p := range pkgs[name] {
			if !qualified || p.arch == arch {
				arch, version = p.arch, p.version
				break
			}
		}
		if version == "" {
			continue // listed but not installed (a leftover list)
		}
		list, err := os.ReadFile(root + dir + "/info/" + e.Name())
		if err != nil {
			continue // removed while we read: the next refresh sees it
		}
		o := uint32(len(x.labels))
		x.labels = append(x.labels, name+":"+arch+" "+version)
		x.names = append(x.names, name)
		for len(list) > 0 {
			var line []byte
			line, list = nextLine(list)
			if len(line) < 2 || line[0] != '/' {
				continue
			}
			pairs = append(pairs, pair{maphash.String(x.seed, res.canon(string(line))), o})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].h != pairs[j].h {
			return pairs[i].h < pairs[j].h
		}
		return pairs[i].o < pairs[j].o
	})
	x.hashes = make([]uint64, len(pairs))
	x.owner = make([]uint32, len(pairs))
	for i, p := range pairs {
		x.hashes[i], x.owner[i] = p.h, p.o
	}
	if div, err := os.ReadFile(root + dir + "/diversions"); err == nil {
		x.applyDiversions(div, res.canon)
	}
	return x, nil
}

// resolver resolves directories through symlinks, component by component,
// remembering every directory so that each costs one readlink.
type resolver struct {
	root string
	memo map[string]string
}

// canon resolves the directories of a listed path; the last component is
// the listed file itself and stays as it is.
func (r *resolver) canon(listed string) string {
	p := path.Clean(listed)
	i := strings.LastIndexByte(p, '/')
	return r.resolve(p[:i], 0) + p[i:]
}

// resolve returns the canonical form of the absolute, clean path p, "" for
// the root.
func (r *resolver) resolve(p string, depth int) string {
	if p == "" || p == "/" {
		return ""
	}
	if v, ok := r.memo[p]; ok {
		return v
	}
	i := strings.LastIndexByte(p, '/')
	parent := r.resolve(p[:i], depth)
	result := parent + p[i:]
	if target, err := os.Readlink(r.root + result); err == nil && depth < maxLinkDepth {
		if !strings.HasPrefix(target, "/") {
			target = parent + "/" + target
		}
		result = r.resolve(path.Clean(target), depth+1)
	}
	r.memo[p] = result
	return result
}
