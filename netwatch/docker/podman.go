package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"

	"github.com/fsnotify/fsnotify"

	"github.com/netalias/netalias/netwatch"
)

// PodmanEventsLog is where a root Podman with the file event logger (the
// default without journald) appends its events, one JSON object a line.
var PodmanEventsLog = "/run/libpod/events/events.log"

// followPodmanLog sends the id of every container that a new line of
// Podman's event log is about. It returns nil when the file is not there
// (another host, rootless, journald); the channel closes when ctx ends or
// the watch fails. Sends never block: a nudge dropped under a burst is
// still covered by the API's own event.
func followPodmanLog(ctx context.Context, path string, log netwatch.Logger) <-chan string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		f.Close()
		return nil
	}
	// The directory, not the file: Podman may rotate the log.
	if err := w.Add(filepath.Dir(path)); err != nil {
		f.Close()
		w.Close()
		return nil
	}
	offset, _ := f.Seek(0, io.SeekEnd)
	out := make(chan string, 256)
	go func() {
		defer close(out)
		defer w.Close()
		defer func() { f.Close() }()
		var partial []byte
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-ctx.Done():
				return
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warningf("docker: watching %s: %v", path, err)
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Name != path {
					continue
				}
				if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Remove) {
					// Rotated: follow the new file from its start.
					nf, err := os.Open(path)
					if err != nil {
						continue
					}
					f.Close()
					f, offset, partial = nf, 0, nil
				}
				if st, err := f.Stat(); err == nil && st.Size() < offset {
					offset, partial = 0, nil // truncated
				}
				for {
					n, err := f.ReadAt(buf, offset)
					offset += int64(n)
					partial = append(partial, buf[:n]...)
					if n < len(buf) || err != nil {
						break
					}
				}
				for {
					i := bytes.IndexByte(partial, '\n')
					if i < 0 {
						break
					}
					if id := podmanLineID(partial[:i]); id != "" {
						select {
						case out <- id:
						default:
						}
					}
					partial = partial[i+1:]
				}
			}
		}
	}()
	return out
}

// podmanLineID returns the container a line of Podman's event log is
// about, or "" when the line does not concern container addresses.
func podmanLineID(line []byte) string {
	var e struct {
		ID     string
		Type   string
		Status string
	}
	if json.Unmarshal(line, &e) != nil {
		return ""
	}
	switch e.Type {
	case "network": // connect, disconnect: ID is the container
		return e.ID
	case "container":
		switch e.Status {
		case "start", "died", "stop", "remove", "rename", "restart", "cleanup", "unpause", "health_status":
			return e.ID
		}
	}
	return ""
}
