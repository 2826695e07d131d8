package notify

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeMotd writes body as the message of the day at path, atomically: a
// login that reads it sees the old text or the new, never a torn one, and a
// crash leaves no half-written file behind.
func writeMotd(path, body string) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write the message of the day %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write the message of the day %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.WriteString(body + "\n"); err != nil {
		return fmt.Errorf("write the message of the day %s: %w", f.Name(), err)
	}
	// Every user reads the motd at login.
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("write the message of the day %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write the message of the day %s: fsync: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write the message of the day %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write the message of the day %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write the message of the day %s: sync directory: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write the message of the day %s: sync directory: %w", path, err)
	}
	return nil
}
