package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"hotfleet/internal/bundle"
	"hotfleet/internal/livepatch"
)

// maxParallel bounds how many processes are patched at once with --all: each
// holds a tracer thread, and the stops are short, so a few suffice.
const maxParallel = 4

// errSomeFailed makes the exit status 1 after the per-process lines, which
// already said what failed.
var errSomeFailed = errors.New("the operation failed in at least one process (see above)")

// procResult is one line of output of apply and revert.
type procResult struct {
	Pid       int      `json:"pid"`
	Comm      string   `json:"comm"`
	PatchID   string   `json:"patch_id"`
	Level     uint32   `json:"level"`
	Functions int      `json:"functions"`
	PauseUS   int64    `json:"pause_us"`
	OK        bool     `json:"ok"`
	Error     string   `json:"error"`
	Replaced  string   `json:"replaced"`
	Recovered []string `json:"recovered"`
	Already   bool     `json:"already_applied,omitempty"`
	Quiescent []string `json:"quiescent,omitempty"`
}

func comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func logger() *slog.Logger {
	if os.Getenv("HOTFLEET_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// forEach runs op on every pid, maxParallel at a time, keeping pid order.
func forEach(pids []int, op func(pid int) procResult) []procResult {
	out := make([]procResult, len(pids))
	sem := make(chan struct{}, maxParallel)
	var wg sync.WaitGroup
	for i, pid := range pids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			out[i] = op(pid)
			<-sem
		}()
	}
	wg.Wait()
	return out
}

func printResults(w io.Writer, results []procResult, asJSON bool, line func(r procResult) string) error {
	failed := false
	for _, r := range results {
		failed = failed || !r.OK
	}
	if asJSON {
		if results == nil {
			results = []procResult{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			return err
		}
	} else {
		for _, r := range results {
			if !r.OK {
				fmt.Fprintf(w, "pid %d (%s): FAILED: %s\n", r.Pid, r.Comm, r.Error)
			} else {
				fmt.Fprintf(w, "pid %d (%s): %s\n", r.Pid, r.Comm, line(r))
			}
			for _, q := range r.Quiescent {
				fmt.Fprintf(w, "  quiescent: %s\n", q)
			}
			for _, rec := range r.Recovered {
				fmt.Fprintf(w, "  recovered: %s\n", rec)
			}
		}
	}
	if failed {
		return errSomeFailed
	}
	return nil
}

func toResult(res livepatch.Result, err error) procResult {
	r := procResult{
		Pid: res.Pid, Comm: comm(res.Pid), PatchID: res.PatchID, Level: res.Level,
		Functions: res.Functions, PauseUS: res.Pause.Microseconds(), OK: err == nil,
		Replaced: res.Replaced, Recovered: append([]string{}, res.Recovered...), Already: res.AlreadyApplied,
		Quiescent: res.Quiescent,
	}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// pidOrAll reads the --pid/--all choice.
func pidOrAll(pid int, all bool, cmd string) error {
	if (pid > 0) == all {
		return fmt.Errorf("%w: 'hotfleet patch %s' needs either --pid PID or --all", errUsage, cmd)
	}
	return nil
}

func cmdPatchApply(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("patch apply", flag.ContinueOnError)
	pid := fs.Int("pid", 0, "process to patch")
	all := fs.Bool("all", false, "patch every process that maps a module of the bundle")
	quiescent := fs.Bool("quiescent", false, "switch every function only when no thread is inside it")
	deadline := fs.Duration("deadline", 10*time.Second, "how long to retry while a function is busy")
	asJSON := fs.Bool("json", false, "print a JSON array, one object per process")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: 'hotfleet patch apply' needs one bundle file, got %d arguments", errUsage, len(pos))
	}
	if err := pidOrAll(*pid, *all, "apply"); err != nil {
		return err
	}
	data, err := os.ReadFile(pos[0])
	if err != nil {
		return fmt.Errorf("read bundle: %w", err)
	}
	b, err := bundle.Decode(data)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	pids := []int{*pid}
	if *all {
		if pids, err = livepatch.Targets(ctx, b); err != nil {
			return err
		}
		if len(pids) == 0 && !*asJSON {
			fmt.Printf("no running process maps a module of %s; nothing to do\n", b.ID)
		}
	}
	opts := livepatch.Options{Deadline: *deadline, Quiescent: *quiescent, Log: logger()}
	results := forEach(pids, func(pid int) procResult {
		return toResult(livepatch.Apply(ctx, pid, b, opts))
	})
	return printResults(os.Stdout, results, *asJSON, func(r procResult) string {
		if r.Already {
			return fmt.Sprintf("%s level %d is already applied; nothing changed", r.PatchID, r.Level)
		}
		s := fmt.Sprintf("applied %s level %d: %d functions switched, pause %d µs", r.PatchID, r.Level, r.Functions, r.PauseUS)
		if r.Replaced != "" {
			s += ", replacing the lower level of " + r.Replaced
		}
		return s
	})
}

func cmdPatchRevert(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("patch revert", flag.ContinueOnError)
	pid := fs.Int("pid", 0, "process to revert the patch in")
	all := fs.Bool("all", false, "revert the patch in every process where it is applied")
	deadline := fs.Duration("deadline", 10*time.Second, "how long to retry while a function is busy")
	asJSON := fs.Bool("json", false, "print a JSON array, one object per process")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: 'hotfleet patch revert' needs one patch id, got %d arguments", errUsage, len(pos))
	}
	if err := pidOrAll(*pid, *all, "revert"); err != nil {
		return err
	}
	id := pos[0]
	pids := []int{*pid}
	if *all {
		if pids, err = appliedIn(ctx, id); err != nil {
			return err
		}
		if len(pids) == 0 && !*asJSON {
			fmt.Printf("patch %s is not applied in any running process; nothing to do\n", id)
		}
	}
	opts := livepatch.Options{Deadline: *deadline, Log: logger()}
	results := forEach(pids, func(pid int) procResult {
		return toResult(livepatch.Revert(ctx, pid, id, opts))
	})
	return printResults(os.Stdout, results, *asJSON, func(r procResult) string {
		return fmt.Sprintf("reverted %s level %d: %d functions restored, pause %d µs", r.PatchID, r.Level, r.Functions, r.PauseUS)
	})
}

// appliedIn lists the processes where patch id is applied.
func appliedIn(ctx context.Context, id string) ([]int, error) {
	pids, err := livepatch.Patched(ctx)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, pid := range pids {
		st, err := livepatch.Status(ctx, pid)
		if err != nil {
			continue // the process exited meanwhile
		}
		for _, a := range st {
			if a.PatchID == id && a.State == "applied" {
				out = append(out, pid)
				break
			}
		}
	}
	return out, nil
}

// statusFunc and statusRegion are the JSON shape of 'patch status'.
type statusFunc struct {
	Name   string `json:"name"`
	Site   string `json:"site"`
	New    string `json:"new"`
	Active bool   `json:"active"`
}

type statusRegion struct {
	Pid        int          `json:"pid"`
	Comm       string       `json:"comm"`
	PatchID    string       `json:"patch_id"`
	Level      uint32       `json:"level"`
	Module     string       `json:"module"`
	BuildID    string       `json:"build_id"`
	State      string       `json:"state"`
	Region     string       `json:"region"`
	Mapping    string       `json:"mapping,omitempty"` // the region's name in /proc/PID/maps
	Functions  []statusFunc `json:"functions"`
	Consistent bool         `json:"consistent"`
	Problem    string       `json:"problem,omitempty"`
	AppliedAt  *time.Time   `json:"applied_at,omitempty"`
	Recovered  []string     `json:"recovered,omitempty"`
}

func cmdPatchStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("patch status", flag.ContinueOnError)
	pid := fs.Int("pid", 0, "process to report on (default: every patched process)")
	asJSON := fs.Bool("json", false, "print a JSON array, one object per region")
	recoverFirst := fs.Bool("recover", false, "first finish or undo what an interrupted hotfleet left")
	deadline := fs.Duration("deadline", 10*time.Second, "with --recover: how long to retry while a function is busy")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: 'hotfleet patch status' takes no arguments, got %q", errUsage, pos)
	}
	pids := []int{*pid}
	if *pid <= 0 {
		if pids, err = livepatch.Patched(ctx); err != nil {
			return err
		}
	}
	var rows []statusRegion
	var failures []string
	for _, p := range pids {
		var recovered []string
		if *recoverFirst {
			recovered, err = livepatch.Recover(ctx, p, livepatch.Options{Deadline: *deadline, Log: logger()})
			if err != nil {
				failures = append(failures, err.Error())
			}
		}
		st, err := livepatch.Status(ctx, p)
		if err != nil {
			failures = append(failures, err.Error())
			continue
		}
		name := comm(p)
		for i, a := range st {
			row := statusRegion{
				Pid: p, Comm: name, PatchID: a.PatchID, Level: a.Level, Module: a.Module,
				BuildID: hex.EncodeToString(a.BuildID), State: a.State,
				Region: "0x" + strconv.FormatUint(a.Region, 16), Mapping: a.Mapping, Consistent: a.Consistent, Problem: a.Problem,
				Functions: []statusFunc{},
			}
			if !a.AppliedAt.IsZero() {
				at := a.AppliedAt.UTC()
				row.AppliedAt = &at
			}
			if i == 0 {
				row.Recovered = recovered
			}
			for _, f := range a.Functions {
				row.Functions = append(row.Functions, statusFunc{
					Name: f.Name, Site: "0x" + strconv.FormatUint(f.Site, 16),
					New: "0x" + strconv.FormatUint(f.New, 16), Active: f.Active,
				})
			}
			rows = append(rows, row)
		}
		if len(st) == 0 && !*asJSON {
			for _, r := range recovered {
				fmt.Printf("pid %d (%s): recovered: %s\n", p, name, r)
			}
		}
	}
	if *asJSON {
		if rows == nil {
			rows = []statusRegion{}
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			return err
		}
	} else {
		printStatusTable(os.Stdout, rows, *pid)
	}
	if len(failures) > 0 {
		return errors.New(strings.Join(failures, "; "))
	}
	return nil
}

func printStatusTable(w io.Writer, rows []statusRegion, pid int) {
	if len(rows) == 0 {
		if pid > 0 {
			fmt.Fprintf(w, "pid %d (%s): no hotfleet patch\n", pid, comm(pid))
		} else {
			fmt.Fprintln(w, "no running process holds a hotfleet patch")
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PID\tCOMM\tPATCH\tLEVEL\tMODULE\tSTATE\tFUNCTIONS\tREGION")
	for _, r := range rows {
		var fns []string
		for _, f := range r.Functions {
			on := "active"
			if !f.Active {
				on = "inactive"
			}
			fns = append(fns, f.Name+" ("+on+")")
		}
		id := r.BuildID
		if len(id) > 12 {
			id = id[:12]
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s (%s)\t%s\t%s\t%s\n", r.Pid, r.Comm, r.PatchID, r.Level,
			baseName(r.Module), id, r.State, strings.Join(fns, ", "), r.Region)
	}
	tw.Flush()
	for _, r := range rows {
		if r.Problem != "" {
			fmt.Fprintf(w, "pid %d %s level %d: %s\n", r.Pid, r.PatchID, r.Level, r.Problem)
		}
		for _, rec := range r.Recovered {
			fmt.Fprintf(w, "pid %d: recovered: %s\n", r.Pid, rec)
		}
	}
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
