package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a server process the harness started. It is stopped with
// SIGTERM (then SIGKILL after 5s) when the harness stops it, when the
// harness's context ends (Ctrl-C), and by the kernel if the harness dies
// (Linux parent-death signal).
type child struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	// logPath, when set, is the file the child writes its output to
	// (directly, by file descriptor: the harness spends no CPU on it).
	logPath string
	exited  chan struct{}
	err     error // set before exited is closed
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// alive reports whether the process is still running.
func (c *child) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// failure describes why the child is gone, with the end of its output.
func (c *child) failure() error {
	return fmt.Errorf("%s exited (%v); its last output:\n%s", c.name, c.err, indent(c.output()))
}

// output is the end of what the child wrote (its last 16 KiB).
func (c *child) output() string {
	if c.logPath == "" {
		return c.out.String()
	}
	f, err := os.Open(c.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 16<<10 {
		_, _ = f.Seek(-16<<10, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (nothing)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// stop terminates the child and waits for it.
func (c *child) stop() {
	if !c.alive() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// startChild starts path with args and env added to the harness's
// environment. With wantStdout, the child's standard output is returned as
// the read end of a pipe (for the "listening ADDR" line); otherwise it goes
// with its standard error to the child's tail buffer.
func startChild(ctx context.Context, name, path string, args, env []string, wantStdout bool, logPath string) (*child, *os.File, error) {
	c := &child{name: name, out: &tailBuffer{max: 16 << 10}, logPath: logPath, exited: make(chan struct{})}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = c.out
	cmd.Stdout = c.out
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, nil, err
		}
		defer f.Close() // the child has its own descriptor once started
		cmd.Stderr, cmd.Stdout = f, f
	}
	var pr, pw *os.File
	if wantStdout {
		var err error
		if pr, pw, err = os.Pipe(); err != nil {
			return nil, nil, err
		}
		cmd.Stdout = pw
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	setParentDeathSignal(cmd)
	err := cmd.Start()
	if pw != nil {
		pw.Close()
	}
	if err != nil {
		if pr != nil {
			pr.Close()
		}
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	c.cmd = cmd
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, pr, nil
}

// startListeningChild starts a child that prints "listening ADDR" on its
// standard output once it serves, and returns ADDR.
func startListeningChild(ctx context.Context, name, path string, args, env []string) (*child, string, error) {
	c, pr, err := startChild(ctx, name, path, args, env, true, "")
	if err != nil {
		return nil, "", err
	}
	lines := make(chan string, 1)
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		first := true
		for sc.Scan() {
			if first {
				lines <- sc.Text()
				first = false
				continue
			}
			_, _ = c.out.Write(append(sc.Bytes(), '\n'))
		}
		if first {
			close(lines)
		}
	}()
	t := time.NewTimer(60 * time.Second)
	defer t.Stop()
	select {
	case l, ok := <-lines:
		if addr, found := strings.CutPrefix(l, "listening "); ok && found {
			return c, addr, nil
		}
		c.stop()
		return nil, "", fmt.Errorf("%s: unexpected first line %q; %w", name, l, c.failure())
	case <-c.exited:
		return nil, "", c.failure()
	case <-t.C:
		c.stop()
		return nil, "", fmt.Errorf("%s did not start within 60s; its output:\n%s", name, indent(c.out.String()))
	case <-ctx.Done():
		c.stop()
		return nil, "", ctx.Err()
	}
}

// startMCPAuthz runs `mcpauthz serve --config cfg` on fresh loopback ports,
// with env added to its environment, and waits until /readyz answers 200
// (policy compiled, keys loaded). A port taken between choosing and
// binding it is retried.
func startMCPAuthz(ctx context.Context, name, bin string, env []string, writeConfig func(grpcAddr, httpAddr string) (string, error)) (*child, string, error) {
	var lastErr error
	for range 3 {
		addrs, err := freeLoopbackAddrs(2)
		if err != nil {
			return nil, "", err
		}
		cfg, err := writeConfig(addrs[0], addrs[1])
		if err != nil {
			return nil, "", err
		}
		// The decision log goes to a file next to the configuration, as
		// a container runtime takes a process's output: mcpauthz pays for
		// writing it, the load generator does not pay for reading it.
		c, _, err := startChild(ctx, name, bin, []string{"serve", "--config", cfg}, env, false, filepath.Join(filepath.Dir(cfg), "mcpauthz.log"))
		if err != nil {
			return nil, "", err
		}
		err = waitReady(ctx, c, "http://"+addrs[1]+"/readyz", 60*time.Second)
		if err == nil {
			return c, addrs[0], nil
		}
		c.stop()
		lastErr = err
		if !strings.Contains(c.output(), "address already in use") {
			break
		}
	}
	return nil, "", lastErr
}

func waitReady(ctx context.Context, c *child, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-c.exited:
			return c.failure()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s; its output:\n%s", c.name, timeout, indent(c.out.String()))
		}
	}
}

// freeLoopbackAddrs returns n distinct free 127.0.0.1 ports.
func freeLoopbackAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	addrs := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// childSet stops every child it holds, newest first.
type childSet struct {
	mu sync.Mutex
	cs []*child
}

func (s *childSet) add(c *child) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cs = append(s.cs, c)
}

func (s *childSet) stopAll() {
	s.mu.Lock()
	cs := s.cs
	s.cs = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(c.stop)
	}
	wg.Wait()
}
