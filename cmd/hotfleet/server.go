package main

import "context"

func cmdServer(ctx context.Context, args []string) error { return nil }
