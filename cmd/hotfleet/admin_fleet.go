package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"hotfleet/internal/api"
)

func init() {
	adminGroups["ring"] = map[string]adminCommand{
		"list":   {"", "Prints the rings config (deferral, deadline and grace in days).", simple(ringList)},
		"set":    {"FILE.json", "Replaces the rings config with FILE ({\"rings\": [...]}, as 'ring list --json' prints it).", simple(ringSet)},
		"pause":  {"NAME --reason R", "Pauses a ring for every release.", ringPause},
		"resume": {"NAME", "Ends a ring's pauses.", simple(ringResume)},
	}
	adminGroups["device"] = map[string]adminCommand{
		"list":   {"[--all]", "Lists devices with their ring and why, state, readiness and last check-in.", deviceList},
		"show":   {"ID", "Shows a device, its modules and its state for each release.", simple(deviceShow)},
		"retire": {"ID [--reason R]", "Retires a device: it leaves the fleet in order.", deviceRetire},
		"revoke": {"ID --reason R", "Revokes a device for good: it is refused from now on.", deviceRevoke},
	}
	adminGroups["token"] = map[string]adminCommand{
		"create": {"[--ttl 24h] [--uses 10] [--ring R] [--label k=v]...", "Creates an enrollment token for devices.", tokenCreate},
		"admin":  {"--name N --role viewer|operator|admin [--ttl D]", "Creates an admin token.", tokenAdmin},
		"revoke": {"ID", "Revokes an admin token.", simple(tokenRevoke)},
	}
}

// ringsFile is the rings config as the API speaks it.
type ringsFile struct {
	Rings []struct {
		Name         string  `json:"name"`
		Share        float64 `json:"share"`
		PinnedOnly   bool    `json:"pinned_only"`
		DeferralDays float64 `json:"deferral_days"`
		DeadlineDays float64 `json:"deadline_days"`
		GraceDays    float64 `json:"grace_days"`
	} `json:"rings"`
}

func printRings(w io.Writer, raw []byte) error {
	var rf ringsFile
	if err := json.Unmarshal(raw, &rf); err != nil {
		return fmt.Errorf("decode the rings config: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RING\tSHARE\tDEFERRAL\tDEADLINE\tGRACE")
	for _, r := range rf.Rings {
		share := fmt.Sprintf("%g%%", r.Share)
		if r.PinnedOnly {
			share = "pinned only"
		}
		fmt.Fprintf(tw, "%s\t%s\t%gd\t%gd\t%gd\n", r.Name, share, r.DeferralDays, r.DeadlineDays, r.GraceDays)
	}
	return tw.Flush()
}

func ringList(ctx context.Context, c *adminClient, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	raw, err := c.call(ctx, "GET", api.AdminRings, nil, nil)
	if err != nil {
		return fmt.Errorf("read the rings: %w", err)
	}
	return c.show(raw, func(w io.Writer) error { return printRings(w, raw) })
}

func ringSet(ctx context.Context, c *adminClient, args []string) error {
	file, err := oneArg(args, "rings file")
	if err != nil {
		return err
	}
	data, err := readFileArg(file, api.MaxAdminBody)
	if err != nil {
		return fmt.Errorf("set the rings: %w", err)
	}
	raw, err := c.call(ctx, "PUT", api.AdminRings, json.RawMessage(data), nil)
	if err != nil {
		return fmt.Errorf("set the rings from %s: %w", file, err)
	}
	return c.show(raw, func(w io.Writer) error { return printRings(w, raw) })
}

func ringPause(fs *flag.FlagSet) adminRun {
	var req api.ReasonRequest
	fs.StringVar(&req.Reason, "reason", "", "why (required)")
	return func(ctx context.Context, c *adminClient, args []string) error {
		name, err := oneArg(args, "ring name")
		if err != nil {
			return err
		}
		if req.Reason == "" {
			return fmt.Errorf("%w: ring pause needs --reason", errUsage)
		}
		var p api.Pause
		raw, err := c.call(ctx, "POST", "rings/"+pathEscape(name)+"/pause", req, &p)
		if err != nil {
			return fmt.Errorf("pause ring %s: %w", name, err)
		}
		return c.show(raw, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "ring %s paused for every release (pause %d)\n", p.Ring, p.ID)
			return err
		})
	}
}

func ringResume(ctx context.Context, c *adminClient, args []string) error {
	name, err := oneArg(args, "ring name")
	if err != nil {
		return err
	}
	var out struct{ Resumed int }
	raw, err := c.call(ctx, "POST", "rings/"+pathEscape(name)+"/resume", nil, &out)
	if err != nil {
		return fmt.Errorf("resume ring %s: %w", name, err)
	}
	return c.show(raw, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "ring %s resumed (%d pauses ended)\n", name, out.Resumed)
		return err
	})
}

func pathEscape(s string) string {
	r := strings.NewReplacer("/", "%2F", "?", "%3F", "#", "%23", "%", "%25", " ", "%20")
	return r.Replace(s)
}

func labelsText(l map[string]string) string {
	keys := sortedKeys(l)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}

func deviceList(fs *flag.FlagSet) adminRun {
	all := fs.Bool("all", false, "include retired and revoked devices")
	return func(ctx context.Context, c *adminClient, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		path := api.AdminDevices
		if *all {
			path += "?all=true"
		}
		var l api.DeviceList
		raw, err := c.call(ctx, "GET", path, nil, &l)
		if err != nil {
			return fmt.Errorf("list devices: %w", err)
		}
		return c.show(raw, func(w io.Writer) error {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tHOSTNAME\tRING\tBY\tSTATE\tREADY\tLAST SEEN\tAGENT\tLABELS")
			for _, d := range l.Devices {
				by := d.PlacedBy
				if d.PlacedLabel != "" {
					by += " " + d.PlacedLabel
				}
				ready := "yes"
				if !d.Ready {
					ready = "no"
					if len(d.Readiness) > 0 {
						ready = "no: " + d.Readiness[0].Reason
					}
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Hostname, d.Ring, by, d.State, ready, when(d.LastSeen), d.AgentVersion, labelsText(d.Labels))
			}
			return tw.Flush()
		})
	}
}

func deviceShow(ctx context.Context, c *adminClient, args []string) error {
	id, err := idArg(args, "device id")
	if err != nil {
		return err
	}
	var d api.DeviceDetail
	raw, err := c.call(ctx, "GET", "devices/"+id, nil, &d)
	if err != nil {
		return fmt.Errorf("show device %s: %w", id, err)
	}
	return c.show(raw, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "ID\t%d\nHostname\t%s\nState\t%s\nRing\t%s (by %s%s)\n", d.ID, d.Hostname, d.State, d.Ring, d.PlacedBy, strings.TrimSuffix(" "+d.PlacedLabel, " "))
		fmt.Fprintf(tw, "Ready\t%v\nLast seen\t%s\nEnrolled\t%s\nAgent\t%s\nLabels\t%s\n", d.Ready, when(d.LastSeen), when(&d.EnrolledAt), d.AgentVersion, labelsText(d.Labels))
		for _, p := range d.Readiness {
			fmt.Fprintf(tw, "Not ready\t%s; %s\n", p.Reason, p.Action)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w, "\nReleases:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "RELEASE\tRING\tSTATE\tSINCE\tREASON")
		for _, r := range d.Releases {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.Release, r.Ring, r.State, when(&r.UpdatedAt), r.Reason)
		}
		tw.Flush()
		fmt.Fprintln(w, "\nModules:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "BUILD-ID\tNAME\tPACKAGE\tPROCESSES")
		sort.Slice(d.Modules, func(i, j int) bool { return d.Modules[i].Name < d.Modules[j].Name })
		for _, m := range d.Modules {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", m.BuildID, m.Name, m.Package, m.Processes)
		}
		return tw.Flush()
	})
}

func deviceAction(ctx context.Context, c *adminClient, args []string, action, reason string) error {
	id, err := idArg(args, "device id")
	if err != nil {
		return err
	}
	var d api.Device
	raw, err := c.call(ctx, "POST", "devices/"+id+"/"+action, api.ReasonRequest{Reason: reason}, &d)
	if err != nil {
		return fmt.Errorf("%s device %s: %w", action, id, err)
	}
	return c.show(raw, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "device %d (%s) is %s\n", d.ID, d.Hostname, d.State)
		return err
	})
}

func deviceRetire(fs *flag.FlagSet) adminRun {
	reason := fs.String("reason", "", "why")
	return func(ctx context.Context, c *adminClient, args []string) error {
		return deviceAction(ctx, c, args, "retire", *reason)
	}
}

func deviceRevoke(fs *flag.FlagSet) adminRun {
	reason := fs.String("reason", "", "why (required)")
	return func(ctx context.Context, c *adminClient, args []string) error {
		if *reason == "" {
			return fmt.Errorf("%w: device revoke needs --reason", errUsage)
		}
		return deviceAction(ctx, c, args, "revoke", *reason)
	}
}

func tokenCreate(fs *flag.FlagSet) adminRun {
	var req api.TokenRequest
	var labels stringList
	fs.StringVar(&req.TTL, "ttl", "24h", "how long the token can be used")
	fs.IntVar(&req.MaxUses, "uses", 10, "how many devices it can enroll")
	fs.StringVar(&req.Ring, "ring", "", "pin devices enrolled with it to this ring")
	fs.Var(&labels, "label", "label k=v given to devices enrolled with it (repeatable)")
	return func(ctx context.Context, c *adminClient, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		for _, l := range labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok || k == "" {
				return fmt.Errorf("%w: --label %q: want key=value", errUsage, l)
			}
			if req.Labels == nil {
				req.Labels = map[string]string{}
			}
			req.Labels[k] = v
		}
		var t api.TokenResponse
		raw, err := c.call(ctx, "POST", api.AdminTokens, req, &t)
		if err != nil {
			return fmt.Errorf("create an enrollment token: %w", err)
		}
		return c.show(raw, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s\n(enrollment token %d, %d uses, expires %s; it is shown only now)\n", t.Token, t.ID, req.MaxUses, when(&t.ExpiresAt))
			return err
		})
	}
}

func tokenAdmin(fs *flag.FlagSet) adminRun {
	var req api.AdminTokenRequest
	fs.StringVar(&req.Name, "name", "", "who holds it, as the audit log names them (required)")
	fs.StringVar(&req.Role, "role", "", "viewer, operator or admin (required)")
	fs.StringVar(&req.TTL, "ttl", "", "how long it is valid (default: until revoked)")
	return func(ctx context.Context, c *adminClient, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if req.Name == "" || req.Role == "" {
			return fmt.Errorf("%w: token admin needs --name and --role", errUsage)
		}
		var t api.AdminTokenResponse
		raw, err := c.call(ctx, "POST", api.AdminAdminTokens, req, &t)
		if err != nil {
			return fmt.Errorf("create admin token %q: %w", req.Name, err)
		}
		return c.show(raw, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s\n(admin token %d %q, role %s, expires %s; it is shown only now)\n", t.Token, t.ID, t.Name, t.Role, when(t.ExpiresAt))
			return err
		})
	}
}

func tokenRevoke(ctx context.Context, c *adminClient, args []string) error {
	id, err := idArg(args, "admin token id")
	if err != nil {
		return err
	}
	if _, err := c.call(ctx, "DELETE", "admin-tokens/"+id, nil, nil); err != nil {
		return fmt.Errorf("revoke admin token %s: %w", id, err)
	}
	if c.asJSON {
		_, err := fmt.Fprintln(c.out, "{}")
		return err
	}
	_, err = fmt.Fprintf(c.out, "admin token %s revoked\n", id)
	return err
}
