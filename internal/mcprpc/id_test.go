package mcprpc

import (
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// TestIntegralID checks the id number rule against exact rational
// arithmetic (math/big) on hand-picked spellings and on a seeded sample of
// generated ones: integral in value and at most 2^53 in magnitude.
func TestIntegralID(t *testing.T) {
	cases := []string{
		"0", "-0", "0.0", "0e99999999999", "-0.000e-7", "1", "1.0", "1e0", "1E2", "1e+2", "1.5e1", "10e-1",
		"12340e-1", "100e-2", "9007199254740992", "-9007199254740992", "9.007199254740992e15",
		"90071992547409920e-1", "9007199254740992.000", "9007199254740993", "9007199254740993.0",
		"9007199254740992.5", "1.00000000000000000001", "1.5", "1e-7", "1e16", "1e300",
		"123456789012345678901234567890e-14",
	}
	// Exponents big.Rat cannot take: both far out of range.
	for _, c := range []string{"1e+99999999999999999999", "1e-99999999999999999999", "0.5e99999999999999999999"} {
		if integralID([]byte(c)) {
			t.Errorf("integralID(%q) = true, want false", c)
		}
	}
	r := rand.New(rand.NewPCG(53, 2))
	for range 5000 {
		var b strings.Builder
		if r.IntN(2) == 0 {
			b.WriteByte('-')
		}
		b.WriteString(strconv.FormatUint(r.Uint64N(1<<uint(r.IntN(60)+1)), 10))
		if r.IntN(2) == 0 {
			b.WriteString(".")
			b.WriteString(strings.Repeat("0", r.IntN(3)) + strconv.Itoa(r.IntN(100)))
		}
		if r.IntN(2) == 0 {
			b.WriteString("e" + strconv.Itoa(r.IntN(40)-20))
		}
		cases = append(cases, b.String())
	}
	limit := new(big.Rat).SetInt64(maxSafeID)
	for _, c := range cases {
		v, ok := new(big.Rat).SetString(c)
		if !ok {
			t.Fatalf("big.Rat cannot parse %q", c)
		}
		want := v.IsInt() && new(big.Rat).Abs(v).Cmp(limit) <= 0
		if got := integralID([]byte(c)); got != want {
			t.Errorf("integralID(%q) = %v, want %v", c, got, want)
		}
	}
}
