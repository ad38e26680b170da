// Package vmctltest has stand-ins for the two things vmctl talks to, for
// tests: xdpswitchd's API (an HTTP server on a unix socket that answers
// like the daemon) and QEMU's QMP socket (a server that keeps devices,
// netdevs and passed file descriptors the way QEMU does, and fails, hangs
// or exits on the command a test names).
package vmctltest

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdpswitch/xdpswitch/api"
)

// State is what the fake daemon serves.
type State struct {
	Networks []api.Network
	Ports    []api.Port
	FDB      []api.FDBEntry
	Leases   []api.Lease
	// Rules are the rules in force, by "networks/NAME" and "ports/NAME".
	Rules map[string]api.Rules
	// Fragments and Reassembly are the switch-wide counts in /v1/stats.
	Fragments  api.Fragments
	Reassembly api.Reassembly
	// Frames is where each loop's UMEM frames are, in /v1/stats.
	Frames []api.FrameQueue
}

// API is a fake xdpswitchd API. Ports added through it must name a network
// it serves and a device that exists, as the daemon's must.
type API struct {
	// Socket is where it listens.
	Socket string

	srv *http.Server

	mu    sync.Mutex
	state State
	calls []string
	fails map[string]apiFailure
}

type apiFailure struct {
	code int
	msg  string
}

// NewAPI serves st on a unix socket in a directory of its own until the
// test ends.
func NewAPI(t testing.TB, st State) *API {
	t.Helper()
	dir, err := os.MkdirTemp("", "xsapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The fake changes its state; the caller's stays as it was.
	st.Networks = slices.Clone(st.Networks)
	for i := range st.Networks {
		st.Networks[i].Ports = slices.Clone(st.Networks[i].Ports)
	}
	st.Ports = slices.Clone(st.Ports)
	st.Rules = maps.Clone(st.Rules)
	if st.Rules == nil {
		st.Rules = map[string]api.Rules{}
	}
	a := &API{Socket: filepath.Join(dir, "api.sock"), state: st, fails: map[string]apiFailure{}}
	l, err := net.Listen("unix", a.Socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/networks", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		reply(w, http.StatusOK, nonNil(a.state.Networks))
	})
	mux.HandleFunc("GET /v1/ports", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		reply(w, http.StatusOK, nonNil(a.state.Ports))
	})
	mux.HandleFunc("POST /v1/ports", a.addPort)
	mux.HandleFunc("DELETE /v1/ports/{name}", a.removePort)
	mux.HandleFunc("GET /v1/fdb", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		n := r.URL.Query().Get("network")
		if n != "" && a.network(n) < 0 {
			reply(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no network %q", n)})
			return
		}
		out := []api.FDBEntry{}
		for _, e := range a.state.FDB {
			if n == "" || e.Network == n {
				out = append(out, e)
			}
		}
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/leases", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		n := r.URL.Query().Get("network")
		if n != "" && a.network(n) < 0 {
			reply(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no network %q", n)})
			return
		}
		out := []api.Lease{}
		for _, e := range a.state.Leases {
			if n == "" || e.Network == n {
				out = append(out, e)
			}
		}
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		reply(w, http.StatusOK, api.Stats{Ports: nonNil(a.state.Ports), Networks: nonNil(a.state.Networks),
			Fragments: a.state.Fragments, Reassembly: a.state.Reassembly, Frames: nonNil(a.state.Frames)})
	})
	for _, kind := range []string{"networks", "ports"} {
		mux.HandleFunc("/v1/"+kind+"/{name}/rules", func(w http.ResponseWriter, r *http.Request) { a.rules(w, r, kind) })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no such API call: %s %s", r.Method, r.URL.Path)})
	})
	a.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.mu.Lock()
			f, ok := a.fails[r.Method+" "+r.URL.Path]
			a.mu.Unlock()
			if ok {
				reply(w, f.code, api.Error{Error: f.msg})
				return
			}
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go a.srv.Serve(l)
	t.Cleanup(func() { a.srv.Close() })
	return a
}

// Client returns an API client for the fake.
func (a *API) Client() *api.Client { return api.NewClient(a.Socket) }

// Fail makes every request of method to path (no query) fail with code
// and {"error": msg}.
func (a *API) Fail(method, path string, code int, msg string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fails[method+" "+path] = apiFailure{code, msg}
}

// Calls returns the changes asked for so far, in order: "add TAP NETWORK"
// and "remove TAP", also those refused.
func (a *API) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// Ports returns the ports the fake has now.
func (a *API) Ports() []api.Port {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.state.Ports)
}

func (a *API) network(name string) int {
	return slices.IndexFunc(a.state.Networks, func(n api.Network) bool { return n.Name == name })
}

func (a *API) port(name string) int {
	return slices.IndexFunc(a.state.Ports, func(p api.Port) bool { return p.Name == name })
}

// rules serves a network's or a port's rules: GET, PUT (checked as the
// daemon checks them, counters start at zero) and DELETE.
func (a *API) rules(w http.ResponseWriter, r *http.Request, kind string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	name := r.PathValue("name")
	if (kind == "networks" && a.network(name) < 0) || (kind == "ports" && a.port(name) < 0) {
		reply(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no %s %q", strings.TrimSuffix(kind, "s"), name)})
		return
	}
	key := kind + "/" + name
	switch r.Method {
	case http.MethodGet:
		reply(w, http.StatusOK, a.state.Rules[key])
	case http.MethodDelete:
		a.calls = append(a.calls, "clear rules "+key)
		delete(a.state.Rules, key)
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPut:
		var rs api.Ruleset
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rs); err != nil {
			reply(w, http.StatusBadRequest, api.Error{Error: "bad request body: " + err.Error()})
			return
		}
		if _, err := rs.Policy(); err != nil {
			reply(w, http.StatusBadRequest, api.Error{Error: "rules: " + err.Error()})
			return
		}
		a.calls = append(a.calls, "set rules "+key)
		a.state.Rules[key] = api.Rules{Ruleset: &rs, Counters: make([]api.RuleCounter, len(rs.Rules))}
		w.WriteHeader(http.StatusNoContent)
	default:
		reply(w, http.StatusMethodNotAllowed, api.Error{Error: "no such API call: " + r.Method + " " + r.URL.Path})
	}
}

func (a *API) addPort(w http.ResponseWriter, r *http.Request) {
	var req api.AddPort
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		reply(w, http.StatusBadRequest, api.Error{Error: "bad request body: " + err.Error()})
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, "add "+req.Name+" "+req.Network)
	if req.Name == "" || req.Network == "" {
		reply(w, http.StatusBadRequest, api.Error{Error: "a port needs a name and a network"})
		return
	}
	n := a.network(req.Network)
	if n < 0 {
		reply(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("port %s: no network %q", req.Name, req.Network)})
		return
	}
	if a.port(req.Name) >= 0 {
		reply(w, http.StatusConflict, api.Error{Error: fmt.Sprintf("port %s exists", req.Name)})
		return
	}
	ifi, err := net.InterfaceByName(req.Name)
	if err != nil {
		reply(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("port %s: no such device", req.Name)})
		return
	}
	if rs := req.Rules; rs != nil {
		if _, err := rs.Policy(); err != nil {
			reply(w, http.StatusBadRequest, api.Error{Error: "rules: " + err.Error()})
			return
		}
		a.state.Rules["ports/"+req.Name] = api.Rules{Ruleset: rs, Counters: make([]api.RuleCounter, len(rs.Rules))}
	}
	p := api.Port{Name: req.Name, Network: req.Network, Ifindex: ifi.Index, XDPMode: "native", BindMode: "copy", Queues: 1,
		Counters: api.PortCounters{Drops: map[string]uint64{}}}
	a.state.Ports = append(a.state.Ports, p)
	a.state.Networks[n].Ports = append(a.state.Networks[n].Ports, p.Name)
	reply(w, http.StatusCreated, p)
}

func (a *API) removePort(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, "remove "+name)
	i := a.port(name)
	if i < 0 {
		reply(w, http.StatusNotFound, api.Error{Error: "no port " + name})
		return
	}
	if n := a.network(a.state.Ports[i].Network); n >= 0 {
		a.state.Networks[n].Ports = slices.DeleteFunc(a.state.Networks[n].Ports, func(s string) bool { return s == name })
	}
	a.state.Ports = slices.Delete(a.state.Ports, i, i+1)
	w.WriteHeader(http.StatusNoContent)
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
