//go:build !race

package mcprpc

const raceEnabled = false
