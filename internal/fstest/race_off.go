//go:build !race

package fstest

// RaceEnabled: see race_on.go.
const RaceEnabled = false
