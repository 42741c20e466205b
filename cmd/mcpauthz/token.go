package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/devissuer"
)

func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", stderr)
	devDir := fs.String("dev-dir", defaultDevDir(), "where the development issuer keeps its key (created if missing)")
	var scopes headerFlags
	fs.Var(&scopes, "scope", "granted scope; repeatable, or several separated by spaces")
	sub := fs.String("sub", devSubject, "subject")
	clientID := fs.String("client-id", devClientID, "client_id claim")
	aud := fs.String("aud", "", "audience (default: the resource of the last `serve --dev`, else "+devResource+")")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *ttl <= 0 {
		fmt.Fprintln(stderr, "mcpauthz token: --ttl must be positive")
		return &exitError{code: 2}
	}
	iss, cfg, err := devSetup(*devDir, "", "", false, true)
	if err != nil {
		return err
	}
	if *aud == "" {
		*aud = cfg.Resource
	}
	var granted []string
	for _, s := range scopes {
		granted = append(granted, strings.Fields(s)...)
	}
	tok, err := iss.Mint(devissuer.MintOptions{
		Subject:  *sub,
		ClientID: *clientID,
		Audience: []string{*aud},
		Scopes:   granted,
		TTL:      *ttl,
		Now:      time.Now(),
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
