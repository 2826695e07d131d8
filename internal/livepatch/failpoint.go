package livepatch

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// FailpointEnv names the environment variable that makes hotfleet kill itself
// with SIGKILL at a named point ("site", or "site:2" for the second time it is
// reached), so crash consistency can be tested against the real binary. The
// points are listed in docs/engine.md.
const FailpointEnv = "HOTFLEET_FAILPOINT"

var failpointHits = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

// failpoint runs the test hooks for the point name.
func (o *Options) failpoint(name string) {
	if o.Failpoint != nil {
		o.Failpoint(name)
	}
	spec := os.Getenv(FailpointEnv)
	if spec == "" {
		return
	}
	want, nth := spec, 1
	if i := strings.LastIndexByte(spec, ':'); i >= 0 {
		if n, err := strconv.Atoi(spec[i+1:]); err == nil && n > 0 {
			want, nth = spec[:i], n
		}
	}
	if want != name {
		return
	}
	failpointHits.Lock()
	failpointHits.n[name]++
	hit := failpointHits.n[name] == nth
	failpointHits.Unlock()
	if hit {
		// SIGKILL, like the crash being simulated: no deferred cleanup runs.
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
