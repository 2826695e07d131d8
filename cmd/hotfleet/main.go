// Command hotfleet keeps Linux processes patched without restarts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"hotfleet/internal/buildtree"
	"hotfleet/internal/notify"
	"hotfleet/internal/readiness"
)

const usage = `hotfleet keeps running Linux processes patched without restarts.

Usage:
  hotfleet patch build   --target BINARY --orig ORIG.o --patched FIXED.o [--id ID --level N --cve CVE-...] -o FIX.hfp
  hotfleet patch build   --source DIR --fix FIX.diff --target BINARY [--target LIB ...] [--build-cmd CMD]
                         [--work DIR --keep-work --json] [--id ID --level N --cve CVE-...] -o FIX.hfp
  hotfleet patch inspect [--json] FIX.hfp
  hotfleet patch apply   FIX.hfp --pid PID|--all [--quiescent] [--deadline 10s] [--json]
  hotfleet patch status  [--pid PID] [--json]
  hotfleet patch revert  ID --pid PID|--all [--json]
  hotfleet agent         --patch-dir DIR [--state-dir DIR --socket PATH --report-url URL --config FILE
                         --workers N --cpu-budget F --rescan 60s --events netlink|poll --no-notify]
  hotfleet agent status  [--json] [--socket PATH]
  hotfleet server        [--listen ADDR --db DSN --data-dir DIR --checkin-interval 5m --offline-after 24h]

Admin (each also takes --server URL, --token TOKEN | --token-file FILE, --json):
  hotfleet release create --name N --kind hotpatch|baseline --severity S [--cve ID]... [--notes T]
                          --bundle FILE.hfp... [--auto-rollback]
  hotfleet release upload FILE.hfp
  hotfleet release list | show ID | status ID | forecast ID
  hotfleet release publish ID [--expedite]
  hotfleet release pause ID --reason R [--ring NAME]
  hotfleet release resume ID [--ring NAME]
  hotfleet release expedite ID
  hotfleet release rollback ID --reason R
  hotfleet release audit [--after N --limit N]
  hotfleet ring list | set FILE.json | pause NAME --reason R | resume NAME
  hotfleet device list [--all] | show ID | retire ID [--reason R] | revoke ID --reason R
  hotfleet token create [--ttl 24h --uses 10 --ring R --label k=v]
  hotfleet token admin --name N --role viewer|operator|admin [--ttl D]
  hotfleet token revoke ID
  hotfleet version
`

// errUsage marks errors caused by how hotfleet was called: exit status 2.
var errUsage = errors.New("usage")

type command func(ctx context.Context, args []string) error

var patchCommands = map[string]command{
	"build":   cmdPatchBuild,
	"inspect": cmdPatchInspect,
	"apply":   cmdPatchApply,
	"status":  cmdPatchStatus,
	"revert":  cmdPatchRevert,
}

func main() {
	// Children the agent starts of itself: the readiness probe's target and
	// the notifier that talks to a user's session bus as that user.
	if os.Getenv(readiness.ProbeEnv) != "" {
		readiness.ProbeTargetMain()
		return
	}
	if os.Getenv(notify.ChildEnv) != "" {
		notify.ChildMain()
		return
	}
	if wrapMode(os.Args[0]) {
		os.Exit(buildtree.WrapMain(os.Args))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hotfleet:", err)
		if errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	switch args[0] {
	case "patch":
		if len(args) < 2 {
			fmt.Fprint(os.Stderr, usage)
			return fmt.Errorf("%w: 'hotfleet patch' needs a subcommand: build, inspect, apply, status or revert", errUsage)
		}
		cmd, ok := patchCommands[args[1]]
		if !ok {
			return fmt.Errorf("%w: unknown command 'hotfleet patch %s'; see 'hotfleet help'", errUsage, args[1])
		}
		return cmd(ctx, args[2:])
	case "agent":
		return cmdAgent(ctx, args[1:])
	case "server":
		return cmdServer(ctx, args[1:])
	case "release", "ring", "device", "token":
		return cmdAdmin(ctx, args[0], args[1:])
	case "version":
		fmt.Println("hotfleet", version)
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q; see 'hotfleet help'", errUsage, args[0])
}

// version is set at link time by the Makefile.
var version = "dev"

// parseFlags parses flags that may come before or after positional arguments,
// as users type them: 'apply fix.hfp --pid 1' and 'apply --pid 1 fix.hfp'.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
