package main

import "time"

// What the development authorization server calls its user and client,
// and how long its tokens live: `token` and the --dev banner mint tokens
// alike in both builds (the slim one has no internal/devauth to ask).
// TestDevConstantsMatchDevauth keeps them equal to internal/devauth's.
const (
	devTokenTTL = time.Hour
	devSubject  = "dev-user"
	devClientID = "mcpauthz-dev"
)
