// Command vmctl controls xdpswitchd through its API socket and plugs NICs
// into running QEMU VMs. The work is done by package vmctl; this is flags
// and output, one file per command.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/xdpswitch/xdpswitch/api"
)

// socketEnv names the environment variable that overrides the default API
// socket.
const socketEnv = "XDPSWITCH_SOCKET"

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// env is what a command runs with.
type env struct {
	ctx            context.Context
	stdout, stderr io.Writer
	getenv         func(string) string
	socket         string // the daemon's API socket (--socket)
}

// command is one verb.
type command struct {
	name    string
	args    string // synopsis of the arguments
	summary string
	run     func(e *env, args []string) error
}

func commands() []command {
	return []command{
		{"attach", "VM --qmp SOCKET --network NET [--mac MAC] [--queues N] [--bus ID] [--wait DURATION] [--no-security] [--rules FILE] [-v]",
			"plug a new NIC into a running VM and into a switch network", attach},
		{"detach", "VM --qmp SOCKET [--mac MAC] [--timeout DURATION] [-v]",
			"unplug a NIC that attach plugged in", detach},
		{"networks", "[--json]", "list the networks with their host ports and ports", networks},
		{"ports", "[--json]", "list the ports with their counters", ports},
		{"fdb", "[--network NET] [--json]", "list the learned MAC addresses", fdb},
		{"leases", "[--network NET] [--json]", "list the DHCP leases", leases},
		{"stats", "[--json]", "show per-port counters and drops, per-network FDB and DHCP counts, fragment tracking, where the UMEM frames are", stats},
		{"rules", "--network NET | --port PORT [--set FILE | --clear] [--json]",
			"show a network's or a port's rules and their counters; replace or remove them", rules},
	}
}

// usageError is a command line vmctl cannot make sense of (exit status 2).
type usageError struct {
	cmd string // the command whose usage helps, "" for vmctl's
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// cmdUsagef is a usage error of command cmd.
func cmdUsagef(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: cmd + ": " + fmt.Sprintf(format, args...)}
}

// errHelp asks for help: usage on stdout and exit status 0.
var errHelp = errors.New("help")

func main() {
	// The first signal cancels the command, which then undoes what it did;
	// a second one ends vmctl at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run runs vmctl with args and returns its exit status. Failures are one
// line on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr, getenv: getenv}
	err := e.dispatch(args)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		help := "vmctl -h"
		if ue.cmd != "" {
			help = "vmctl " + ue.cmd + " -h"
		}
		fmt.Fprintf(stderr, "vmctl: %s (%s for help)\n", oneLine(err.Error()), help)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "vmctl: %s\n", oneLine(err.Error()))
		return exitFailure
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

func (e *env) dispatch(args []string) error {
	fs := flag.NewFlagSet("vmctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.socketFlag(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			e.usage(e.stdout)
			return errHelp
		}
		return usagef("%v", err)
	}
	args = fs.Args()
	if len(args) == 0 {
		return usagef("no command given")
	}
	if args[0] == "help" {
		e.usage(e.stdout)
		return errHelp
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(e, args[1:])
		}
	}
	return usagef("unknown command %q", args[0])
}

func (e *env) defaultSocket() string {
	if s := e.getenv(socketEnv); s != "" {
		return s
	}
	return api.DefaultSocket
}

// socketFlag adds --socket to fs: before the command or among its flags.
func (e *env) socketFlag(fs *flag.FlagSet) {
	if e.socket == "" {
		e.socket = e.defaultSocket()
	}
	fs.StringVar(&e.socket, "socket", e.socket, "xdpswitchd's API socket `PATH` (default $"+socketEnv+", else "+api.DefaultSocket+")")
}

func (e *env) usage(w io.Writer) {
	fmt.Fprint(w, `usage: vmctl [--socket PATH] COMMAND [ARGUMENTS] [FLAGS]

vmctl plugs NICs into running QEMU VMs and shows what xdpswitchd does.

commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s %s\n  \t%s\n", c.name, c.args, c.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, `
global flags:
  --socket PATH  xdpswitchd's API socket (default $%s, else %s)

Run vmctl COMMAND -h for a command's flags.
Exit status: 0 done, 1 failed, 2 bad usage.
`, socketEnv, api.DefaultSocket)
}

// flags returns the flag set of a command, with --socket.
func (e *env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.socketFlag(fs)
	return fs
}

// parse parses a command's arguments, flags and positional arguments in
// any order, and checks that there are npos positional ones.
func (e *env) parse(fs *flag.FlagSet, args []string, npos int) ([]string, error) {
	var pos, tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i+1:]
			break
		}
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				e.commandUsage(e.stdout, fs)
				return nil, errHelp
			}
			return nil, cmdUsagef(fs.Name(), "%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	pos = append(pos, tail...)
	if len(pos) != npos {
		var c command
		for _, c = range commands() {
			if c.name == fs.Name() {
				break
			}
		}
		if len(pos) < npos {
			return nil, cmdUsagef(c.name, "no %s given", strings.Fields(c.args)[len(pos)])
		}
		return nil, cmdUsagef(c.name, "unexpected argument %q", pos[npos])
	}
	return pos, nil
}

func (e *env) commandUsage(w io.Writer, fs *flag.FlagSet) {
	for _, c := range commands() {
		if c.name == fs.Name() {
			fmt.Fprintf(w, "usage: vmctl %s %s\n\n%s.\n\nflags:\n", c.name, c.args, upperFirst(c.summary))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		if arg != "" {
			arg = " " + arg
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.Name != "socket" {
			def = " (default " + f.DefValue + ")"
		}
		dashes := "--"
		if len(f.Name) == 1 {
			dashes = "-"
		}
		fmt.Fprintf(tw, "  %s%s%s\t%s%s\n", dashes, f.Name, arg, usage, def)
	})
	tw.Flush()
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// client returns an API client for the daemon's socket.
func (e *env) client() *api.Client {
	return api.NewClient(e.socket)
}

// apiError adds a hint to an error of the API client.
func apiError(err error) error {
	if strings.Contains(err.Error(), "cannot reach xdpswitchd") {
		return fmt.Errorf("%w (is xdpswitchd running? --socket or $%s names another socket)", err, socketEnv)
	}
	return err
}

// printJSON writes v as indented JSON.
func (e *env) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", b)
	return err
}

// table writes rows under a header, in aligned columns.
func (e *env) table(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// orDash shows an empty value as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// counts shows the non-zero counters of m as "a=1,b=2", sorted, or "-".
func counts(m map[string]uint64) string {
	var keys []string
	for k, v := range m {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "-"
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, ",")
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
