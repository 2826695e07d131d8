package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"hotfleet/internal/api"
)

// Admin CLI defaults, each with its reason.
const (
	// defaultServer is where 'hotfleet server' listens by default.
	defaultServer = "http://127.0.0.1:8420"
	// defaultTokenFile is where 'hotfleet server' writes its bootstrap
	// token with the default --data-dir.
	defaultTokenFile = "/var/lib/hotfleet/" + api.AdminTokenFile
	// adminTimeout bounds one admin request: a 64 MiB bundle upload over a
	// slow link fits, a hung server does not hold a script forever.
	adminTimeout = 5 * time.Minute
	// maxAdminAnswer bounds what the CLI reads of an answer; the largest,
	// a forecast of a big fleet, fits.
	maxAdminAnswer = 256 << 20
)

// adminCommand is one 'hotfleet GROUP NAME' command.
type adminCommand struct {
	args string // usage after the command name
	help string
	// setup registers the command's own flags and returns what runs once
	// they are parsed.
	setup func(fs *flag.FlagSet) adminRun
}

type adminRun func(ctx context.Context, c *adminClient, args []string) error

var adminGroups = map[string]map[string]adminCommand{}

func cmdAdmin(ctx context.Context, group string, args []string) error {
	cmds := adminGroups[group]
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(os.Stderr, adminGroupUsage(group))
		if len(args) == 0 {
			return fmt.Errorf("%w: 'hotfleet %s' needs a subcommand", errUsage, group)
		}
		return nil
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		return fmt.Errorf("%w: unknown command 'hotfleet %s %s'; see 'hotfleet %s help'", errUsage, group, args[0], group)
	}
	name := "hotfleet " + group + " " + args[0]
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s %s\n\n%s\n\nFlags:\n", name, cmd.args, cmd.help)
		fs.PrintDefaults()
	}
	c := &adminClient{out: os.Stdout}
	c.register(fs)
	run := cmd.setup(fs)
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if err := c.setup(); err != nil {
		return err
	}
	return run(ctx, c, pos)
}

func adminGroupUsage(group string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: hotfleet %s COMMAND [flags]\n\nCommands:\n", group)
	for _, name := range sortedKeys(adminGroups[group]) {
		cmd := adminGroups[group][name]
		fmt.Fprintf(&b, "  %-10s %s\n", name, cmd.args)
	}
	b.WriteString("\nEvery command takes --server URL, --token TOKEN or --token-file FILE, and --json.\n")
	return b.String()
}

// adminClient talks to the admin API.
type adminClient struct {
	server, token, tokenFile string
	asJSON                   bool
	base                     *url.URL
	out                      io.Writer
	http                     http.Client
}

func (c *adminClient) register(fs *flag.FlagSet) {
	server := os.Getenv("HOTFLEET_SERVER")
	if server == "" {
		server = defaultServer
	}
	fs.StringVar(&c.server, "server", server, "the server's URL (env HOTFLEET_SERVER)")
	fs.StringVar(&c.token, "token", os.Getenv("HOTFLEET_TOKEN"), "admin token (env HOTFLEET_TOKEN)")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the admin token (default "+defaultTokenFile+" when readable)")
	fs.BoolVar(&c.asJSON, "json", false, "print the API's JSON")
}

// setup resolves the server URL and the token after the flags are parsed.
func (c *adminClient) setup() error {
	u, err := url.Parse(strings.TrimRight(c.server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: --server %q is not an http(s) URL such as %s", errUsage, c.server, defaultServer)
	}
	c.base = u
	c.http.Timeout = adminTimeout
	if c.token != "" {
		return nil
	}
	file, explicit := c.tokenFile, c.tokenFile != ""
	if !explicit {
		file = defaultTokenFile
	}
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		c.token = strings.TrimSpace(string(b))
	case explicit:
		return fmt.Errorf("read the admin token from --token-file %s: %w", file, err)
	}
	return nil
}

// apiError is the server's refusal, as it worded it.
type apiError struct {
	status int
	body   api.Error
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("the server answered %d %s: %s", e.status, http.StatusText(e.status), e.body.Error)
	if e.body.Field != "" {
		msg += " (field " + e.body.Field + ")"
	}
	if e.status == http.StatusUnauthorized {
		msg += "; pass --token, --token-file or HOTFLEET_TOKEN"
	}
	return msg
}

// call sends a request to path under the admin API. body is JSON-encoded
// unless it is []byte (sent as a bundle). The answer is decoded into out
// unless out is nil, and returned raw.
func (c *adminClient) call(ctx context.Context, method, path string, body, out any) ([]byte, error) {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/octet-stream"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("encode the %s %s request: %w", method, path, err)
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	u := c.base.String() + api.PathAdmin + path
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w; is 'hotfleet server' running there (--server, HOTFLEET_SERVER)?", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminAnswer))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read the answer: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		ae := &apiError{status: resp.StatusCode}
		if json.Unmarshal(raw, &ae.body) != nil || ae.body.Error == "" {
			ae.body.Error = strings.TrimSpace(string(raw))
		}
		return nil, ae
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s %s: decode the answer: %w", method, u, err)
		}
	}
	return raw, nil
}

// show prints raw JSON with --json, or calls table otherwise.
func (c *adminClient) show(raw []byte, table func(w io.Writer) error) error {
	if c.asJSON {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			_, err = c.out.Write(raw)
			return err
		}
		buf.WriteByte('\n')
		_, err := c.out.Write(buf.Bytes())
		return err
	}
	return table(c.out)
}

// oneArg checks that exactly one positional argument, named what, was given.
func oneArg(args []string, what string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("%w: want one %s, got %d arguments %q", errUsage, what, len(args), args)
	}
	return args[0], nil
}

// releaseID reads a release or device id argument.
func idArg(args []string, what string) (string, error) {
	id, err := oneArg(args, what)
	if err != nil {
		return "", err
	}
	for _, r := range id {
		if r < '0' || r > '9' {
			return "", fmt.Errorf("%w: %s %q is not a number", errUsage, what, id)
		}
	}
	return id, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func when(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
}

// readFileArg reads a file named on the command line, bounded by limit.
func readFileArg(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is over the server's limit of %d bytes", filepath.Base(path), limit)
	}
	return b, nil
}

var errNoArgs = errors.New("takes no arguments")

func noArgs(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: %v, got %q", errUsage, errNoArgs, args)
	}
	return nil
}
