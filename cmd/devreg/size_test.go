package main

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1GiB": 1 << 30, "512MiB": 512 << 20, "100MB": 100e6, "1048576": 1 << 20, "0.5GiB": 512 << 20, " 2 KiB ": 2048, "1TiB": 1 << 40,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0.5", "NaN", "nanGiB", "Inf", "+Inf", "12345678901234567890", "0", "-1", "1e9", "0x10", "1.5", "", "GiB", "2TiB", "1..2"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}
