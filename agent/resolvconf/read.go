package resolvconf

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strings"
)

// Content is what a namespace's resolver file says.
type Content struct {
	Exists     bool
	Ours       bool // carries netalias's marker
	Nameserver string
	Search     []string
}

// Read reads namespace name's resolver file (a missing file is no error).
func Read(name string) (Content, error) {
	b, err := os.ReadFile(Path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return Content{}, nil
	}
	if err != nil {
		return Content{}, err
	}
	c := Content{Exists: true, Ours: bytes.HasPrefix(b, []byte(marker))}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 2 && f[0] == "nameserver" && c.Nameserver == "":
			c.Nameserver = f[1]
		case len(f) >= 1 && f[0] == "search":
			c.Search = f[1:]
		}
	}
	return c, nil
}
