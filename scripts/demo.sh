#!/usr/bin/env bash
# demo.sh: hot patch a running server with hotfleet, from source to revert.
#
# Builds bin/hotfleet and examples/sample (a tiny file server with a path
# traversal bug, built with make), starts the server, then with hotfleet:
# builds a patch bundle from the source tree and examples/sample/fix.diff in
# one command, inspects it, applies it to the running server, shows
# that the same process now refuses the attack, reads the status back from
# the process, reverts, and shows the original behaviour again. Last, the
# agent keeps the running server and a newly started one patched from a patch
# directory, with no command per process.
#
# Needs root (ptrace), gcc and Go. Exits 0 only if every step worked.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$PATH:/usr/local/go/bin"

# Seconds to wait for the server to start and to answer one request.
readonly start_timeout=10 answer_timeout=5
readonly patch_id=sample-path-fix

current=""
step() {
	current="$*"
	printf '\n==> %s\n' "$*"
}
die() {
	echo "demo: $*" >&2
	exit 1
}
run() {
	echo "\$ $*"
	"$@"
}
trap 'echo "demo: FAILED during: $current" >&2' ERR

[ "$(id -u)" = 0 ] || die "hot patching ptraces the sample server and needs root; run: sudo make demo"
command -v gcc >/dev/null || die "gcc compiles the sample; install it first (Debian/Ubuntu: apt-get install gcc libc6-dev)"

step "Build hotfleet"
if command -v make >/dev/null; then
	run make -s build
else
	command -v go >/dev/null || die "Go is needed to build hotfleet; install it from https://go.dev/dl/"
	run env CGO_ENABLED=0 go build -o bin/hotfleet ./cmd/hotfleet
fi
[ -x bin/hotfleet ] || die "the build did not produce bin/hotfleet"
export PATH="$root/bin:$PATH"

work=$(mktemp -d /tmp/hotfleet-demo.XXXXXX)
server_pid=""
agent_pid=""
cleanup() {
	if [ -n "$agent_pid" ]; then
		kill "$agent_pid" 2>/dev/null || true
	fi
	if [ -n "${old_pid:-}" ]; then
		kill "$old_pid" 2>/dev/null || true
	fi
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
# The server is built the way a distribution builds it: from its source
# tree, with make and its own flags, nothing hotfleet-specific.
cp -a "$root/examples/sample" src
rm -rf src/fixed
step "Build the sample server from its source tree (in $work/src)"
run make -s -C src clean
run make -s -C src
cp src/sample-server sample-server

# start_server starts a sample server logging to $1 and sets server_pid and
# port once it listens.
start_server() {
	local log=$1
	: >"$log"
	./sample-server >"$log" 2>&1 &
	server_pid=$!
	port=""
	for _ in $(seq $((start_timeout * 10))); do
		port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
		[ -n "$port" ] && break
		kill -0 "$server_pid" 2>/dev/null || die "the sample server exited: $(cat "$log")"
		sleep 0.1
	done
	[ -n "$port" ] || die "the sample server did not start within ${start_timeout}s: $(cat "$log")"
	cat "$log"
}

step "Start the sample server"
start_server server.log

# ask sends one request line to the server and prints its answer.
ask() {
	local reply
	exec 3<>"/dev/tcp/127.0.0.1/$port" || die "cannot connect to the sample server on port $port"
	printf 'GET %s\n' "$1" >&3
	IFS= read -r -t "$answer_timeout" reply <&3 || die "no answer from the sample server to GET $1"
	exec 3<&- 3>&-
	printf '%s\n' "$reply"
}

# requests asks for a normal file and for one outside the document root, and
# checks that the answers come from the same server process and that the
# second one is $1 (the bug: 200 OK; fixed: 403 Forbidden).
requests() {
	local want=$1 a b
	a=$(ask index.html)
	b=$(ask ../../etc/shadow)
	echo "  GET index.html       -> $a"
	echo "  GET ../../etc/shadow -> $b"
	case $a in "[pid $server_pid] 200 OK"*) ;; *) die "index.html: unexpected answer: $a" ;; esac
	case $b in "[pid $server_pid] $want"*) ;; *) die "../../etc/shadow: want '$want' from pid $server_pid, got: $b" ;; esac
}

step "The running server has the bug: ../ escapes the document root"
requests "200 OK"

step "Build the patch bundle from the source tree and the fix, against the server binary"
# One command: hotfleet builds the tree before and after fix.diff with a
# compiler wrapper, diffs the objects, proves the rebuilt original equals
# the running binary, and links the changed functions against it.
run cat src/fix.diff
run hotfleet patch build --source src --fix src/fix.diff --target sample-server \
	--id "$patch_id" --level 1 --cve CVE-0000-0001 --description "sample: refuse .. in request paths" -o "$patch_id.hfp"

step "Inspect the bundle"
run hotfleet patch inspect "$patch_id.hfp"

step "Apply it to the running server (pid $server_pid), no restart"
run hotfleet patch apply "$patch_id.hfp" --pid "$server_pid"

step "The same process now refuses the attack"
requests "403 Forbidden"

step "Status, read from the server process itself"
out=$(run hotfleet patch status --pid "$server_pid")
echo "$out"
grep -q "$patch_id" <<<"$out" || die "status does not show $patch_id in pid $server_pid"

step "Revert the patch"
run hotfleet patch revert "$patch_id" --pid "$server_pid"

step "The original code runs again"
requests "200 OK"

step "Let the agent keep the device patched: drop the bundle into its patch directory"
mkdir -p patches
cp "$patch_id.hfp" patches/
hotfleet agent --patch-dir patches --state-dir agent-state --socket "$work/agent.sock" --no-notify >agent.log 2>&1 &
agent_pid=$!
echo "\$ hotfleet agent --patch-dir patches --state-dir agent-state --socket $work/agent.sock &   (pid $agent_pid)"
# The agent finds the running server and patches it, with no command.
for _ in $(seq $((start_timeout * 10))); do
	case $(ask ../../etc/shadow) in "[pid $server_pid] 403"*) break ;; esac
	kill -0 "$agent_pid" 2>/dev/null || die "the agent exited: $(cat agent.log)"
	sleep 0.1
done
requests "403 Forbidden"

step "A server started now is patched as it starts"
old_pid=$server_pid
start_server server2.log
requests "403 Forbidden"

step "What the agent says"
run hotfleet agent status --socket "$work/agent.sock"

step "Stop the agent and both servers"
kill "$agent_pid"
wait "$agent_pid" 2>/dev/null || true
kill "$server_pid" "$old_pid"
wait "$server_pid" "$old_pid" 2>/dev/null || true
server_pid=""
echo
echo "demo: every step worked: a process was patched and reverted without a restart, and the agent kept old and new processes patched"
