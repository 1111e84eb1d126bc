//go:build race

package httpapi_test

// raceEnabled says the race detector slows this build down, SQLite (C translated to Go) the most.
const raceEnabled = true
