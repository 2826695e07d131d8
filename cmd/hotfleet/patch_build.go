package main

import (
	"context"
	"errors"
)

// Owned by the builder work: replace these.
func cmdPatchBuild(ctx context.Context, args []string) error   { return errors.New("not built yet") }
func cmdPatchInspect(ctx context.Context, args []string) error { return errors.New("not built yet") }
