package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"hotfleet/internal/api"
)

// statusColumns are the device states 'release status' shows, in order.
var statusColumns = []string{"assigned", "applied", "failed", "not-applicable", "needs-restart", "offline"}

func init() {
	adminGroups["release"] = map[string]adminCommand{
		"create": {"--name N --kind hotpatch|baseline --severity S [--cve ID]... [--notes T] --bundle FILE.hfp... [--auto-rollback]",
			"Uploads each bundle, then creates a draft release of them.", releaseCreate},
		"upload":  {"FILE.hfp", "Uploads a bundle and prints its SHA-256 and build-ids.", releaseUpload},
		"list":    {"", "Lists releases, newest first.", simple(releaseList)},
		"show":    {"ID", "Shows one release.", simple(releaseShow)},
		"publish": {"ID [--expedite]", "Publishes a draft: its rollout through the rings starts.", releasePublish},
		"pause":   {"ID --reason R [--ring NAME]", "Pauses a release everywhere, or in one ring.", releasePause},
		"resume":  {"ID [--ring NAME]", "Ends a release's pauses, or one ring's.", releaseResume},
		"expedite": {"ID", "Makes every ring eligible now.", simple(func(ctx context.Context, c *adminClient, args []string) error {
			return releasePost(ctx, c, args, "expedite", nil)
		})},
		"rollback": {"ID --reason R", "Rolls a release back: agents revert it everywhere.", releaseRollback},
		"status":   {"ID", "Shows a release's rollout ring by ring: schedule, device counts, automatic actions.", simple(releaseStatus)},
		"forecast": {"ID", "Forecasts which devices get a release when, and the compliance curve.", simple(releaseForecast)},
		"audit":    {"[--after N] [--limit N]", "Prints the audit log, oldest first.", releaseAudit},
	}
}

// simple is a command without flags of its own.
func simple(run adminRun) func(fs *flag.FlagSet) adminRun {
	return func(*flag.FlagSet) adminRun { return run }
}

func printRelease(w io.Writer, r api.Release) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\t%d\nName\t%s\nState\t%s\nKind\t%s\nSeverity\t%s\n", r.ID, r.Name, r.State, r.Kind, r.Severity)
	fmt.Fprintf(tw, "CVEs\t%s\n", strings.Join(r.CVEs, " "))
	fmt.Fprintf(tw, "Created\t%s by %s\nPublished\t%s\nExpedited\t%s\nAuto-rollback\t%v\n", when(&r.CreatedAt), r.CreatedBy, when(r.PublishedAt), when(r.ExpeditedAt), r.AutoRollback)
	if r.Notes != "" {
		fmt.Fprintf(tw, "Notes\t%s\n", r.Notes)
	}
	for _, b := range r.Bundles {
		fmt.Fprintf(tw, "Bundle\tbuild-id %s → %s\n", b.BuildID, b.SHA256)
	}
	return tw.Flush()
}

func upload(ctx context.Context, c *adminClient, file string) (api.BundleUpload, []byte, error) {
	data, err := readFileArg(file, api.MaxBundle)
	if err != nil {
		return api.BundleUpload{}, nil, fmt.Errorf("upload bundle: %w", err)
	}
	var up api.BundleUpload
	raw, err := c.call(ctx, "POST", api.AdminBundles, data, &up)
	if err != nil {
		return api.BundleUpload{}, nil, fmt.Errorf("upload bundle %s: %w", file, err)
	}
	return up, raw, nil
}

func releaseUpload(fs *flag.FlagSet) adminRun {
	return func(ctx context.Context, c *adminClient, args []string) error {
		file, err := oneArg(args, "bundle file")
		if err != nil {
			return err
		}
		up, raw, err := upload(ctx, c, file)
		if err != nil {
			return err
		}
		return c.show(raw, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s  %s level %d, %d bytes, build-ids %s\n", up.SHA256, up.ID, up.Level, up.Size, strings.Join(up.BuildIDs, " "))
			return err
		})
	}
}

func releaseCreate(fs *flag.FlagSet) adminRun {
	var req api.ReleaseRequest
	var cves, bundles stringList
	fs.StringVar(&req.Name, "name", "", "release name (required)")
	fs.StringVar(&req.Kind, "kind", "hotpatch", "hotpatch or baseline")
	fs.StringVar(&req.Severity, "severity", "", "low, moderate, important or critical (required)")
	fs.Var(&cves, "cve", "CVE id the release fixes (repeatable)")
	fs.StringVar(&req.Notes, "notes", "", "notes for admins")
	fs.Var(&bundles, "bundle", "bundle file .hfp (repeatable, at least one)")
	fs.BoolVar(&req.AutoRollback, "auto-rollback", false, "an automatic halt also rolls the release back")
	return func(ctx context.Context, c *adminClient, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if req.Name == "" || req.Severity == "" || len(bundles) == 0 {
			return fmt.Errorf("%w: release create needs --name, --severity and at least one --bundle", errUsage)
		}
		req.CVEs = cves
		for _, f := range bundles {
			up, _, err := upload(ctx, c, f)
			if err != nil {
				return err
			}
			req.Bundles = append(req.Bundles, up.SHA256)
		}
		var rel api.Release
		raw, err := c.call(ctx, "POST", api.AdminReleases, req, &rel)
		if err != nil {
			return fmt.Errorf("create release %q: %w", req.Name, err)
		}
		return c.show(raw, func(w io.Writer) error { return printRelease(w, rel) })
	}
}

func releaseList(ctx context.Context, c *adminClient, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	var l api.ReleaseList
	raw, err := c.call(ctx, "GET", api.AdminReleases, nil, &l)
	if err != nil {
		return fmt.Errorf("list releases: %w", err)
	}
	return c.show(raw, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tSTATE\tKIND\tSEVERITY\tCVES\tPUBLISHED")
		for _, r := range l.Releases {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, r.State, r.Kind, r.Severity, strings.Join(r.CVEs, ","), when(r.PublishedAt))
		}
		return tw.Flush()
	})
}

func releaseShow(ctx context.Context, c *adminClient, args []string) error {
	id, err := idArg(args, "release id")
	if err != nil {
		return err
	}
	var rel api.Release
	raw, err := c.call(ctx, "GET", "releases/"+id, nil, &rel)
	if err != nil {
		return fmt.Errorf("show release %s: %w", id, err)
	}
	return c.show(raw, func(w io.Writer) error { return printRelease(w, rel) })
}

// releasePost posts an action on a release and prints the release after.
func releasePost(ctx context.Context, c *adminClient, args []string, action string, body any) error {
	id, err := idArg(args, "release id")
	if err != nil {
		return err
	}
	var rel api.Release
	raw, err := c.call(ctx, "POST", "releases/"+id+"/"+action, body, &rel)
	if err != nil {
		return fmt.Errorf("%s release %s: %w", action, id, err)
	}
	return c.show(raw, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "release %d %q is %s\n", rel.ID, rel.Name, rel.State)
		return err
	})
}

func releasePublish(fs *flag.FlagSet) adminRun {
	expedite := fs.Bool("expedite", false, "skip the rings' deferrals: every ring is eligible now")
	return func(ctx context.Context, c *adminClient, args []string) error {
		return releasePost(ctx, c, args, "publish", api.PublishRequest{Expedite: *expedite})
	}
}

func releasePause(fs *flag.FlagSet) adminRun {
	var req api.PauseRequest
	fs.StringVar(&req.Reason, "reason", "", "why (required; shown to admins and in device notices)")
	fs.StringVar(&req.Ring, "ring", "", "pause only this ring")
	return func(ctx context.Context, c *adminClient, args []string) error {
		if req.Reason == "" {
			return fmt.Errorf("%w: release pause needs --reason", errUsage)
		}
		return releasePost(ctx, c, args, "pause", req)
	}
}

func releaseResume(fs *flag.FlagSet) adminRun {
	var req api.ResumeRequest
	fs.StringVar(&req.Ring, "ring", "", "resume only this ring's pauses")
	return func(ctx context.Context, c *adminClient, args []string) error {
		return releasePost(ctx, c, args, "resume", req)
	}
}

func releaseRollback(fs *flag.FlagSet) adminRun {
	var req api.ReasonRequest
	fs.StringVar(&req.Reason, "reason", "", "why (required)")
	return func(ctx context.Context, c *adminClient, args []string) error {
		if req.Reason == "" {
			return fmt.Errorf("%w: release rollback needs --reason", errUsage)
		}
		return releasePost(ctx, c, args, "rollback", req)
	}
}

func releaseStatus(ctx context.Context, c *adminClient, args []string) error {
	id, err := idArg(args, "release id")
	if err != nil {
		return err
	}
	var st api.ReleaseStatus
	raw, err := c.call(ctx, "GET", "releases/"+id+"/status", nil, &st)
	if err != nil {
		return fmt.Errorf("status of release %s: %w", id, err)
	}
	return c.show(raw, func(w io.Writer) error {
		fmt.Fprintf(w, "Release %d %q: %s, %s, published %s\n\n", st.Release.ID, st.Release.Name, st.Release.State, st.Release.Kind, when(st.Release.PublishedAt))
		// Numbers align right; ring names are padded so they read from
		// the left.
		width := len("RING")
		for _, r := range st.Rings {
			width = max(width, len(r.Ring))
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "%-*s\tELIGIBLE\t", width, "RING")
		for _, s := range statusColumns {
			fmt.Fprintf(tw, "%s\t", strings.ToUpper(s))
		}
		fmt.Fprintln(tw)
		for _, r := range st.Rings {
			eligible := when(r.Eligible)
			switch {
			case r.Paused:
				eligible = "paused"
			case r.Held:
				eligible = "held"
			}
			fmt.Fprintf(tw, "%-*s\t%s\t", width, r.Ring, eligible)
			for _, s := range statusColumns {
				fmt.Fprintf(tw, "%d\t", r.Counts[s])
			}
			fmt.Fprintln(tw)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, p := range st.Pauses {
			scope := "every ring"
			if p.Ring != "" {
				scope = "ring " + p.Ring
			}
			fmt.Fprintf(w, "\nPaused in %s since %s by %s: %s", scope, when(&p.CreatedAt), p.Actor, p.Reason)
		}
		if len(st.Pauses) > 0 {
			fmt.Fprintln(w)
		}
		if len(st.Actions) == 0 {
			_, err := fmt.Fprintln(w, "\nAutomatic actions: none")
			return err
		}
		fmt.Fprintln(w, "\nAutomatic actions:")
		for _, a := range st.Actions {
			fmt.Fprintf(w, "  %s  %s  %s\n", when(&a.At), a.Action, a.Details)
		}
		return nil
	})
}

func releaseForecast(ctx context.Context, c *adminClient, args []string) error {
	id, err := idArg(args, "release id")
	if err != nil {
		return err
	}
	var f api.Forecast
	raw, err := c.call(ctx, "GET", "releases/"+id+"/forecast", nil, &f)
	if err != nil {
		return fmt.Errorf("forecast of release %s: %w", id, err)
	}
	return c.show(raw, func(w io.Writer) error {
		fmt.Fprintf(w, "Release %d, published %s: %d applicable devices, %d not applicable\n\n", f.Release, when(&f.Published), len(f.Devices), f.NotApplicable)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE\tHOSTNAME\tRING\tELIGIBLE\tEXPECTED\tNOTE")
		for _, d := range f.Devices {
			note := ""
			switch {
			case d.Unknown:
				note = "unknown: never seen, or its ring is held"
			case d.Away:
				note = "away; expected back"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", d.DeviceID, d.Hostname, d.Ring, when(d.Eligible), when(d.Expected), note)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w, "\nCompliance (share of applicable devices by time after publication):")
		next := 0
		for _, target := range []float64{0.25, 0.5, 0.75, 0.9, 0.99, 1} {
			for next < len(f.Curve) && f.Curve[next].Compliant < target {
				next++
			}
			if next == len(f.Curve) {
				fmt.Fprintf(w, "  %3.0f%%  not expected\n", target*100)
				continue
			}
			fmt.Fprintf(w, "  %3.0f%%  by +%s\n", target*100, time.Duration(f.Curve[next].OffsetS*float64(time.Second)).Round(time.Minute))
		}
		return nil
	})
}

func releaseAudit(fs *flag.FlagSet) adminRun {
	after := fs.Int64("after", 0, "print entries after this id")
	limit := fs.Int("limit", 100, "print at most this many entries")
	return func(ctx context.Context, c *adminClient, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		var l api.AuditList
		raw, err := c.call(ctx, "GET", fmt.Sprintf("audit?after=%d&limit=%d", *after, *limit), nil, &l)
		if err != nil {
			return fmt.Errorf("read the audit log: %w", err)
		}
		return c.show(raw, func(w io.Writer) error {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tAT\tACTOR\tACTION\tTARGET\tDETAILS")
			for _, e := range l.Entries {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.ID, when(&e.At), e.Actor, e.Action, e.Target, e.Details)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if l.Next != 0 {
				fmt.Fprintf(w, "(more: --after %d)\n", l.Next)
			}
			return nil
		})
	}
}
