package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/internal/atomicfile"
)

// pluggedFile, in state_dir, lists the ports plugged in through the API
// (vmctl attach) as they were asked for, with the rules set on them
// since. A VM's tap outlives a restart of the daemon, held open by QEMU,
// so a daemon that stops (to upgrade, or by a crash that systemd restarts)
// plugs them in again: the VMs keep their NICs and their network. Ports
// from the config come from the config.
const pluggedFile = "ports.json"

// plugged is the record of the API's ports, saved on every change.
type plugged struct {
	path  string
	mu    sync.Mutex
	ports []api.AddPort
}

type pluggedPorts struct {
	Ports []api.AddPort `json:"ports"`
}

// load reads the record. A record that cannot be read is moved aside
// (ports.json.bad) so that the next save does not erase it, and the
// daemon starts without it.
func (p *plugged) load() error {
	b, err := os.ReadFile(p.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var f pluggedPorts
	if err := json.Unmarshal(b, &f); err != nil {
		bad := p.path + ".bad"
		if rerr := os.Rename(p.path, bad); rerr != nil {
			return errors.Join(fmt.Errorf("%s: %w", p.path, err), rerr)
		}
		return fmt.Errorf("%s: %w (moved to %s)", p.path, err, bad)
	}
	p.ports = f.Ports
	return nil
}

// save writes the record. The caller holds mu.
func (p *plugged) save() error {
	b, err := json.MarshalIndent(pluggedPorts{Ports: nonNilPorts(p.ports)}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p.path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(p.path, append(b, '\n'))
}

func nonNilPorts(ps []api.AddPort) []api.AddPort {
	if ps == nil {
		return []api.AddPort{}
	}
	return ps
}

// update changes the record with fn and saves it, leaving out the ports
// the switch no longer has: removed when their device vanished, or by a
// call that overtook the one recording them.
func (p *plugged) update(live func(name string) bool, fn func(ports []api.AddPort) []api.AddPort) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ports = slices.DeleteFunc(fn(p.ports), func(r api.AddPort) bool { return !live(r.Name) })
	return p.save()
}

func without(ports []api.AddPort, name string) []api.AddPort {
	return slices.DeleteFunc(ports, func(r api.AddPort) bool { return r.Name == name })
}

// pluggedByAPI tells whether the switch has the port because the API
// plugged it in.
func (d *Daemon) pluggedByAPI(name string) bool {
	if _, err := d.sw.Port(name); err != nil {
		return false
	}
	p := d.plugged
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.ContainsFunc(p.ports, func(r api.AddPort) bool { return r.Name == name })
}

// recordPlugged applies fn to the record and saves it. The port works
// whether or not the record could be saved, so a failure is logged: the
// port would not come back after a restart.
func (d *Daemon) recordPlugged(fn func(ports []api.AddPort) []api.AddPort) {
	live := func(name string) bool {
		_, err := d.sw.Port(name)
		return err == nil
	}
	if err := d.plugged.update(live, fn); err != nil {
		d.log.Error("saving the plugged ports; they will not be plugged in again after a restart", "err", err)
	}
}

// restorePlugged plugs in again the ports the last run had plugged in
// through the API, and forgets those whose device is gone or that no
// longer fit the config (their network removed, say), saying why.
func (d *Daemon) restorePlugged() {
	p := d.plugged
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.load(); err != nil {
		d.log.Error("ports plugged in by the last run", "err", err)
	}
	var kept []api.AddPort
	for _, req := range p.ports {
		if _, err := netlink.LinkByName(req.Name); err != nil {
			d.log.Info("port not plugged in again: its device went while the daemon was down", "port", req.Name, "network", req.Network)
			continue
		}
		opts, err := portOptionsFromAPI(req)
		if err == nil {
			err = d.sw.AddPort(req.Name, req.Network, opts)
		}
		if err != nil {
			d.log.Warn("port not plugged in again", "port", req.Name, "network", req.Network, "err", err)
			continue
		}
		d.log.Info("port plugged in again", "port", req.Name, "network", req.Network)
		kept = append(kept, req)
	}
	p.ports = kept
	if err := p.save(); err != nil {
		d.log.Error("saving the plugged ports", "err", err)
	}
}
