// Package config reads and checks the daemon's YAML configuration.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xdpswitch/xdpswitch/bpf"
	"github.com/xdpswitch/xdpswitch/dataplane"
	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
)

// Config is the daemon's configuration file.
type Config struct {
	// RunDir holds the daemon's lock (and later its API socket).
	RunDir string `yaml:"run_dir"`
	// StateDir holds what survives a restart.
	StateDir string `yaml:"state_dir"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// Queues is the number of switching loops; every port needs as many
	// rx queues.
	Queues int `yaml:"queues"`
	// Frames is the UMEM size of each queue, in frames.
	Frames int `yaml:"frames"`
	// FrameSize is 2048 or 4096 bytes.
	FrameSize int `yaml:"frame_size"`
	// FillFrames is each socket's share of frames for receiving.
	FillFrames int `yaml:"fill_frames"`
	// XDPMode is auto, native or generic.
	XDPMode string `yaml:"xdp_mode"`
	// BindMode is auto, copy or zerocopy.
	BindMode string `yaml:"bind_mode"`
	FDB      FDB    `yaml:"fdb"`

	Networks []Network `yaml:"networks"`
}

// FDB tunes every network's forwarding database.
type FDB struct {
	MaxEntries int      `yaml:"max_entries"`
	Aging      Duration `yaml:"aging"`
}

// Network is one isolated L2 segment and the devices plugged into it.
type Network struct {
	Name  string   `yaml:"name"`
	Ports []string `yaml:"ports"`
}

// Duration reads "300s", "5m" and the like.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 300s or 5m", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Defaults for what the file leaves out.
const (
	DefaultRunDir   = "/run/xdpswitch"
	DefaultStateDir = "/var/lib/xdpswitch"
)

// Load reads and checks a config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads a config from YAML, refusing unknown keys (a typo must not
// silently leave a default in force), and checks it.
func Parse(b []byte) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		return nil, err
	}
	c.setDefaults()
	if err := c.Check(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) setDefaults() {
	if c.RunDir == "" {
		c.RunDir = DefaultRunDir
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.XDPMode == "" {
		c.XDPMode = "auto"
	}
	if c.BindMode == "" {
		c.BindMode = "auto"
	}
	if c.Queues == 0 {
		c.Queues = 1
	}
	if c.Frames == 0 {
		c.Frames = dataplane.DefaultFrames
	}
	if c.FrameSize == 0 {
		c.FrameSize = afxdp.DefaultUmemConfig().FrameSize
	}
	if c.FillFrames == 0 {
		c.FillFrames = dataplane.DefaultFillFrames
	}
	if c.FDB.MaxEntries == 0 {
		c.FDB.MaxEntries = dataplane.DefaultFDBMaxEntries
	}
	if c.FDB.Aging == 0 {
		c.FDB.Aging = Duration(dataplane.DefaultFDBAging)
	}
}

// Check reports every problem in the config at once.
func (c *Config) Check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, err := bpf.ParseXDPMode(c.XDPMode); err != nil {
		bad("xdp_mode: %v", err)
	}
	if _, err := afxdp.ParseMode(c.BindMode); err != nil {
		bad("bind_mode: %v", err)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	if c.Queues < 1 || c.Queues > bpf.MaxQueues {
		bad("queues: %d is not between 1 and %d", c.Queues, bpf.MaxQueues)
	}
	if c.FrameSize != 2048 && c.FrameSize != 4096 {
		bad("frame_size: %d is not 2048 or 4096", c.FrameSize)
	}
	if c.Frames < 64 || c.Frames&(c.Frames-1) != 0 {
		bad("frames: %d is not a power of two of at least 64", c.Frames)
	}
	if c.FillFrames < 1 || c.FillFrames > 4096 {
		bad("fill_frames: %d is not between 1 and 4096", c.FillFrames)
	}
	if c.FDB.MaxEntries < 1 {
		bad("fdb.max_entries: %d is not positive", c.FDB.MaxEntries)
	}
	if c.FDB.Aging < Duration(time.Second) {
		bad("fdb.aging: %v is shorter than a second", time.Duration(c.FDB.Aging))
	}
	if len(c.Networks) == 0 {
		bad("networks: none configured")
	}
	nets := map[string]bool{}
	ports := map[string]string{}
	for i, n := range c.Networks {
		switch {
		case n.Name == "":
			bad("networks[%d]: no name", i)
		case nets[n.Name]:
			bad("networks[%d]: name %q used twice", i, n.Name)
		}
		nets[n.Name] = true
		for _, p := range n.Ports {
			if err := checkDeviceName(p); err != nil {
				bad("network %q: port %q: %v", n.Name, p, err)
			}
			if other, dup := ports[p]; dup {
				bad("network %q: port %q is already in network %q", n.Name, p, other)
			}
			ports[p] = n.Name
		}
	}
	return errors.Join(errs...)
}

// checkDeviceName applies the kernel's rules for interface names.
func checkDeviceName(s string) error {
	if s == "" || len(s) > 15 {
		return errors.New("device names are 1 to 15 bytes")
	}
	if s == "." || s == ".." {
		return errors.New("not a device name")
	}
	for _, r := range s {
		if r == '/' || r == ':' || r <= ' ' || r > '~' {
			return fmt.Errorf("device names cannot contain %q", r)
		}
	}
	return nil
}

// Dataplane turns the config into the switch's own.
func (c *Config) Dataplane() dataplane.Config {
	xdp, _ := bpf.ParseXDPMode(c.XDPMode)
	bind, _ := afxdp.ParseMode(c.BindMode)
	umem := afxdp.DefaultUmemConfig()
	umem.NumFrames = c.Frames
	umem.FrameSize = c.FrameSize
	return dataplane.Config{
		Queues:        c.Queues,
		Umem:          umem,
		FillFrames:    c.FillFrames,
		BindMode:      bind,
		XDPMode:       xdp,
		FDBMaxEntries: c.FDB.MaxEntries,
		FDBAging:      time.Duration(c.FDB.Aging),
	}
}
