package problem

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPrefix(t *testing.T) {
	var l List
	l.Add("leeway", "must be between %s and %s", "0s", "10m")
	l.Add("[2]", "empty")
	l.Add("", "whole")
	inner := l.Err()

	var outer List
	outer.Merge("issuers[0]", inner)
	outer.Merge("policy.paths", fs.ErrNotExist)
	outer.Merge("ignored", nil)

	var got []string
	for _, e := range Split(outer.Err()) {
		got = append(got, e.Error())
	}
	want := []string{
		"issuers[0].leeway: must be between 0s and 10m",
		"issuers[0][2]: empty",
		"issuers[0]: whole",
		"policy.paths: file does not exist",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Merge/Prefix paths (-want +got):\n%s", diff)
	}
	if !errors.Is(outer.Err(), fs.ErrNotExist) {
		t.Errorf("errors.Is(merged, fs.ErrNotExist) = false: the cause was lost")
	}
	if Prefix("x", nil) != nil || (&List{}).Err() != nil {
		t.Errorf("no problems must give a nil error")
	}
}
