package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Client talks to a daemon's API socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	return &Client{
		socket: socket,
		http: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", socket)
				},
			},
		},
	}
}

// StatusError is a request the daemon refused.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// IsNotFound reports whether err says the thing asked for does not exist.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://xdpswitchd"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) {
			return fmt.Errorf("cannot reach xdpswitchd at %s: %w", c.socket, ne.Err)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
		}
		return &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	return nil
}

// Networks lists the networks.
func (c *Client) Networks(ctx context.Context) ([]Network, error) {
	var out []Network
	return out, c.do(ctx, http.MethodGet, "/v1/networks", nil, &out)
}

// Ports lists the ports.
func (c *Client) Ports(ctx context.Context) ([]Port, error) {
	var out []Port
	return out, c.do(ctx, http.MethodGet, "/v1/ports", nil, &out)
}

// AddPort plugs the named device into a network.
func (c *Client) AddPort(ctx context.Context, name, network string) (Port, error) {
	return c.AddPortWith(ctx, AddPort{Name: name, Network: network})
}

// AddPortWith plugs a device in with everything AddPort can say.
func (c *Client) AddPortWith(ctx context.Context, req AddPort) (Port, error) {
	var out Port
	return out, c.do(ctx, http.MethodPost, "/v1/ports", req, &out)
}

// RemovePort unplugs a port.
func (c *Client) RemovePort(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/ports/"+url.PathEscape(name), nil, nil)
}

// FDB lists the learned MACs of one network, or of all when network is "".
func (c *Client) FDB(ctx context.Context, network string) ([]FDBEntry, error) {
	var out []FDBEntry
	return out, c.do(ctx, http.MethodGet, "/v1/fdb"+query(network), nil, &out)
}

// Leases lists the DHCP leases of one network, or of all when network is "".
func (c *Client) Leases(ctx context.Context, network string) ([]Lease, error) {
	var out []Lease
	return out, c.do(ctx, http.MethodGet, "/v1/leases"+query(network), nil, &out)
}

// Stats returns every counter.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var out Stats
	return out, c.do(ctx, http.MethodGet, "/v1/stats", nil, &out)
}

func query(network string) string {
	if network == "" {
		return ""
	}
	return "?network=" + url.QueryEscape(network)
}
