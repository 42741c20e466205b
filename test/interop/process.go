package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// process is a child process of a test: one of its outputs is read as lines
// (stdout: the Node scripts' JSON; stderr: mcpauthz's JSON log), the other
// kept for the failure report, and it is stopped when the test ends (stdin
// closed, then an interrupt, then a kill).
type process struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line
	other   bytes.Buffer  // the output that is not read as lines
	out     chan struct{} // closed when stdout is at EOF
	exited  chan struct{} // closed when the process has exited
	err     error         // Wait's result, after exited
}

// start runs cmd, reading its stdout as lines (its stderr when
// linesOnStderr), and registers its cleanup with t.
func start(t testing.TB, name string, cmd *exec.Cmd, linesOnStderr bool) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, changed: make(chan struct{}), out: make(chan struct{}), exited: make(chan struct{})}
	var (
		stdout io.ReadCloser
		err    error
	)
	if linesOnStderr {
		stdout, err = cmd.StderrPipe()
		cmd.Stdout = &lockedWriter{mu: &p.mu, w: &p.other}
	} else {
		stdout, err = cmd.StdoutPipe()
		cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.other}
	}
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		defer close(p.out)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		<-p.out
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.otherText())
			if linesOnStderr {
				t.Logf("%s log:\n%s", name, strings.Join(p.snapshot(), "\n"))
			}
		}
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// stop ends the process: stdin closed (the Node scripts exit on it), then
// an interrupt (mcpauthz shuts down gracefully on it), then a kill.
func (p *process) stop() {
	_ = p.stdin.Close()
	select {
	case <-p.exited:
		return
	case <-time.After(2 * time.Second):
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
		return
	case <-time.After(10 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

func (p *process) otherText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.other.String()
}

// tail returns the last n lines read.
func (p *process) tail(n int) string {
	lines := p.snapshot()
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// snapshot returns the lines read so far.
func (p *process) snapshot() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLine waits for a stdout line for which match is true and returns it.
func (p *process) waitLine(ctx context.Context, what string, match func(string) bool) (string, error) {
	seen := 0
	for {
		p.mu.Lock()
		lines, changed := p.lines[seen:], p.changed
		p.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		seen += len(lines)
		select {
		case <-changed:
		case <-p.exited:
			// Lines may have arrived just before the exit.
			p.mu.Lock()
			rest := p.lines[seen:]
			p.mu.Unlock()
			for _, l := range rest {
				if match(l) {
					return l, nil
				}
			}
			return "", fmt.Errorf("%s exited (%v) before %s; output:\n%s\nlast lines:\n%s", p.name, p.exitErr(), what, p.otherText(), p.tail(20))
		case <-ctx.Done():
			return "", fmt.Errorf("%s: no %s: %w; output:\n%s\nlast lines:\n%s", p.name, what, ctx.Err(), p.otherText(), p.tail(20))
		}
	}
}

// waitFile waits until the process has written the file at path (written
// by renaming, so never seen half-written) and returns its content. It
// polls: the process reports nothing else when the file appears.
func (p *process) waitFile(ctx context.Context, path string) ([]byte, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			return b, nil
		}
		select {
		case <-tick.C:
		case <-p.exited:
			if b, err := os.ReadFile(path); err == nil {
				return b, nil
			}
			return nil, fmt.Errorf("%s exited (%v) before writing %s; output:\n%s\nlast lines:\n%s", p.name, p.exitErr(), path, p.otherText(), p.tail(20))
		case <-ctx.Done():
			return nil, fmt.Errorf("%s did not write %s: %w; output:\n%s\nlast lines:\n%s", p.name, path, ctx.Err(), p.otherText(), p.tail(20))
		}
	}
}

// wait waits for the process to exit and returns Wait's error.
func (p *process) wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return p.exitErr()
	case <-ctx.Done():
		return fmt.Errorf("%s did not finish: %w", p.name, ctx.Err())
	}
}

func (p *process) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// ready reads the first JSON line with "ready": true into v.
func (p *process) ready(ctx context.Context, v any) error {
	line, err := p.waitLine(ctx, "ready line", func(l string) bool { return strings.HasPrefix(l, `{"ready":true`) })
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(line), v)
}
