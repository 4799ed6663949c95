package faults

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy on a loopback port of its own, so that a client's
// URL stays valid while the server behind it is killed and restarted on
// another port. While it has no target, or the target refuses, each new
// connection is reset at once (the client sees "connection reset by
// peer", as a load balancer with no backend answers). A connection whose
// other side closes is closed too.
type Proxy struct {
	ln       net.Listener
	wg       sync.WaitGroup
	requests chan struct{}

	mu      sync.Mutex
	target  string
	conns   map[net.Conn]struct{}
	closed  bool
	refused int
}

// NewProxy listens on 127.0.0.1:0 and forwards to target ("" for none).
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, requests: make(chan struct{}, 1)}
	p.wg.Go(p.serve)
	return p, nil
}

// Addr is the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTarget makes new connections go to addr; "" resets them. Connections
// already open keep their backend.
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// Sending is signalled (it holds one signal at most) each time bytes from
// a client were forwarded to the backend: a test waits on it to act while
// a request is under way, e.g. to kill the backend mid-request.
func (p *Proxy) Sending() <-chan struct{} { return p.requests }

// Refused returns how many connections were reset because there was no
// target or it refused.
func (p *Proxy) Refused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient accept error (e.g. EMFILE)
		}
		p.wg.Go(func() { p.forward(c) })
	}
}

// track registers c to be closed by Close; false if the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) forward(client net.Conn) {
	if !p.track(client) {
		_ = client.Close()
		return
	}
	defer p.untrack(client)
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	var backend net.Conn
	if target != "" {
		backend, _ = net.DialTimeout("tcp", target, 5*time.Second)
	}
	if backend == nil {
		p.mu.Lock()
		p.refused++
		p.mu.Unlock()
		reset(client)
		return
	}
	if !p.track(backend) {
		_ = backend.Close()
		return
	}
	defer p.untrack(backend)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) { // backend to client
		_, _ = io.Copy(dst, src)
		// Either side ending ends both: HTTP/1.1 does not half-close.
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go func() {
		// client to backend, signalling Sending for each read
		buf := make([]byte, 32<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				select {
				case p.requests <- struct{}{}:
				default:
				}
				if _, werr := backend.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		_ = backend.Close()
		_ = client.Close()
		done <- struct{}{}
	}()
	go pipe(client, backend)
	<-done
	<-done
}
