package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"

	"github.com/mcpauthz/mcpauthz"
	"github.com/mcpauthz/mcpauthz/internal/problem"
)

// Source names the policy files to load.
type Source struct {
	// FS is the file system Paths are read from; nil means the OS file
	// system.
	FS fs.FS
	// Paths are .rego files, .json/.yaml/.yml data files, or directories of
	// them, loaded with OPA's loader convention: a data file found in a
	// directory is mounted under data at the path of that directory relative
	// to the path given, as "opa test" and "opa eval -d" do. Inside
	// directories, files with other extensions and names starting with "."
	// (editor files, the ..data links of a Kubernetes ConfigMap volume) are
	// skipped. Files ending in _test.rego are the policy's tests: they run
	// in the activation check and are never compiled into the decision.
	Paths []string
}

// Validate reports, as *problem.Error values ("paths[1]"), the paths of an
// OS file system source that cannot be read. A source that passes may still
// fail to load (its Rego may not compile); Compile tells.
func (src Source) Validate() error {
	var errs problem.List
	if len(src.Paths) == 0 {
		errs.Add("paths", "no policy paths")
	}
	if src.FS != nil {
		return errs.Err()
	}
	for i, p := range src.Paths {
		_, root := loader.SplitPrefix(p)
		if _, err := os.Stat(root); err != nil {
			errs.Add(fmt.Sprintf("paths[%d]", i), "cannot read %q: %v", root, errors.Unwrap(err))
		}
	}
	return errs.Err()
}

// DefaultSource returns the embedded default policy: mcpauthz.DefaultPolicy
// with the root "rego" (which holds the policy and its data, not the
// examples of the repository's rego/examples).
func DefaultSource() Source {
	return Source{FS: mcpauthz.DefaultPolicy, Paths: []string{"rego"}}
}

// newFilter returns the loader filter for policy sources; it returns true for
// files and directories to skip.
func newFilter(withTests bool) loader.Filter {
	return func(_ string, info fs.FileInfo, depth int) bool {
		name := info.Name()
		if depth > 0 && strings.HasPrefix(name, ".") {
			return true
		}
		if info.IsDir() {
			return false
		}
		if !withTests && strings.HasSuffix(name, "_test.rego") {
			return true
		}
		if depth == 0 {
			// A file named explicitly is handed to the loader as is.
			return false
		}
		switch filepath.Ext(name) {
		case ".rego", ".json", ".yaml", ".yml":
			return false
		}
		return true
	}
}

// snapshot is the content of a source at one point in time. Loading reads
// the files from the snapshot, so the revision always describes exactly the
// bytes that were compiled.
type snapshot struct {
	files map[string][]byte // keyed by the path the OPA loader uses
	sum   [sha256.Size]byte
}

func (s *snapshot) revision() string { return revisionOf(s.sum) }

func revisionOf(sum [sha256.Size]byte) string { return hex.EncodeToString(sum[:6]) }

// readSource reads every policy file of src and hashes them. The hash covers
// each file's name relative to the path it was found under (plus the data
// prefix of a "prefix:path" entry) and its content, so the same files give
// the same revision whether they are embedded or on disk.
func readSource(src Source, withTests bool) (*snapshot, error) {
	if len(src.Paths) == 0 {
		return nil, errors.New("policy: no policy paths")
	}
	filter := newFilter(withTests)
	type entry struct {
		name string
		data []byte
	}
	var (
		entries []entry
		errs    []error
		snap    = &snapshot{files: map[string][]byte{}}
	)
	for _, p := range src.Paths {
		paths, err := loader.FilteredPathsFS(src.FS, []string{p}, filter)
		if err != nil {
			errs = append(errs, flatten(err)...)
			continue
		}
		prefix, root := loader.SplitPrefix(p)
		for _, f := range paths {
			data, ok := snap.files[f]
			if !ok {
				if data, err = readFile(src.FS, f); err != nil {
					errs = append(errs, err)
					continue
				}
				snap.files[f] = data
			}
			entries = append(entries, entry{name: strings.Join(prefix, ".") + ":" + relName(root, f), data: data})
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("policy: %w", errors.Join(errs...))
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		return strings.Compare(string(a.data), string(b.data))
	})
	h := sha256.New()
	var n [8]byte
	for _, e := range entries {
		binary.BigEndian.PutUint64(n[:], uint64(len(e.name)))
		h.Write(n[:])
		h.Write([]byte(e.name))
		binary.BigEndian.PutUint64(n[:], uint64(len(e.data)))
		h.Write(n[:])
		h.Write(e.data)
	}
	h.Sum(snap.sum[:0])
	return snap, nil
}

// relName names file f relative to the root it was found under, with "/"
// separators; a root that is itself a file is named by its base name.
func relName(root, f string) string {
	rel, err := filepath.Rel(filepath.Clean(root), f)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		rel = filepath.Base(f)
	}
	return filepath.ToSlash(rel)
}

func readFile(fsys fs.FS, name string) ([]byte, error) {
	if fsys == nil {
		return os.ReadFile(name)
	}
	return fs.ReadFile(fsys, name)
}

// snapshotFS serves file contents from a snapshot and directory listings
// from the underlying file system, so that the OPA loader walks the source
// as usual but compiles exactly the snapshot. Paths are passed through
// unchanged: for the OS file system they are OS paths, which may be absolute
// or contain "..", unlike the fs.FS convention; only the loader uses it.
type snapshotFS struct {
	base  fs.FS // nil: the OS file system
	files map[string][]byte
	read  map[string]bool
}

var errChanged = errors.New("policy files changed while loading; retry")

func (s *snapshotFS) Open(name string) (fs.File, error) {
	if s.base == nil {
		return os.Open(name)
	}
	return s.base.Open(name)
}

func (s *snapshotFS) ReadFile(name string) ([]byte, error) {
	data, ok := s.files[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, errChanged)
	}
	s.read[name] = true
	return data, nil
}

func (s *snapshotFS) Stat(name string) (fs.FileInfo, error) {
	if s.base == nil {
		return os.Stat(name)
	}
	return fs.Stat(s.base, name)
}

func (s *snapshotFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if s.base == nil {
		return os.ReadDir(name)
	}
	return fs.ReadDir(s.base, name)
}

// complete reports whether the loader read every file of the snapshot; a
// file that vanished between reading the snapshot and loading it is not.
func (s *snapshotFS) complete() error {
	for name := range s.files {
		if !s.read[name] {
			return fmt.Errorf("%s: %w", name, errChanged)
		}
	}
	return nil
}

// flatten lists the individual errors of a loader or compiler error so that
// every one of them, each with its file:line, reaches the caller.
func flatten(err error) []error {
	var ae ast.Errors
	if errors.As(err, &ae) {
		out := make([]error, 0, len(ae))
		for _, e := range ae {
			out = append(out, e)
		}
		return out
	}
	var le loader.Errors
	if errors.As(err, &le) {
		out := make([]error, 0, len(le))
		for _, e := range le {
			out = append(out, flatten(e)...)
		}
		return out
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}
