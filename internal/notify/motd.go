package notify

import (
	"fmt"
	"os"
	"path/filepath"

	"hotfleet/internal/atomicfile"
)

// writeMotd writes body as the message of the day at path, atomically: a
// login that reads it sees the old text or the new, never a torn one, and a
// crash leaves no half-written file behind. Every user reads the motd at
// login, so it is world-readable.
func writeMotd(path, body string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write the message of the day %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, []byte(body+"\n"), 0o644); err != nil {
		return fmt.Errorf("write the message of the day: %w", err)
	}
	return nil
}
