package main

import (
	"context"
	"errors"
)

// Owned by the engine work: replace these.
func cmdPatchApply(ctx context.Context, args []string) error  { return errors.New("not built yet") }
func cmdPatchStatus(ctx context.Context, args []string) error { return errors.New("not built yet") }
func cmdPatchRevert(ctx context.Context, args []string) error { return errors.New("not built yet") }
