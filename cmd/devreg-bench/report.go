package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"
)

// measure is one figure measured in one run.
type measure struct {
	value float64 // in the figure's unit: seconds, requests/s, ms or MB
	ratio float64 // to the figure's baseline measured in the same run; 0 without one
	cpu   float64 // the server's CPU seconds meanwhile; 0 when not measured
	rssMB float64 // the server's peak resident memory meanwhile; 0 when not measured
	// stages are a registration's Server-Timing: seconds by stage, in the order the server sent them
	stages []stage
}

type stage struct {
	name    string
	seconds float64
}

// against returns m with its ratio to a baseline that took base.
func (m measure) against(base time.Duration) measure {
	m.ratio = m.value / base.Seconds()
	return m
}

// series is a figure over the runs.
type series struct {
	name, baseline string
	runs           []measure
}

func (s *series) values() []float64 { return s.pick(func(m measure) float64 { return m.value }) }
func (s *series) ratios() []float64 { return s.pick(func(m measure) float64 { return m.ratio }) }

func (s *series) pick(f func(measure) float64) []float64 {
	var xs []float64
	for _, m := range s.runs {
		xs = append(xs, f(m))
	}
	return xs
}

// results are the figures of every run, by name.
type results struct {
	byName     map[string]*series
	stageNames []string // of the CSV request's stages, in order
}

func newResults() *results { return &results{byName: map[string]*series{}} }

// add records a figure's measure in the current run, as a ratio to baseline ("" for none).
func (r *results) add(name, baseline string, m measure) {
	s := r.byName[name]
	if s == nil {
		s = &series{name: name, baseline: baseline}
		r.byName[name] = s
	}
	s.runs = append(s.runs, m)
}

// addStages records the CSV request's time by stage. Reading the body, checking and hashing
// overlap in the server, so they are split by difference, from the times of requests of the same
// entries that end after each: one refused at its first entry (so that no secret is hashed) and
// one refused at its last (every secret hashed and spooled). The rest are the server's own timers
// (Server-Timing). Each stage's ratio is its share of the request.
func (r *results) addStages(refusedFirst, refusedLast float64, request measure) {
	stages := []stage{{"receive+parse+check_rules", refusedFirst}, {"hash+spool", refusedLast - refusedFirst}}
	var timed float64
	for _, st := range request.stages {
		if st.name != "read" { // the two above
			stages = append(stages, stage{"server:" + st.name, st.seconds})
		}
		timed += st.seconds
	}
	stages = append(stages, stage{"rest (HTTP, answer)", request.value - timed})
	for _, st := range stages {
		r.add("stage:"+st.name, "register_csv", measure{value: st.seconds, ratio: st.seconds / request.value})
		if !slices.Contains(r.stageNames, st.name) {
			r.stageNames = append(r.stageNames, st.name)
		}
	}
}

// spread is the median of some values and their least and greatest.
type spread struct{ med, lo, hi float64 }

func spreadOf(xs []float64) spread {
	if len(xs) == 0 {
		return spread{}
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	med := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		med = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return spread{med, xs[0], xs[len(xs)-1]}
}

func (s spread) format(prec int) string {
	return fmt.Sprintf("%.*f [%.*f–%.*f]", prec, s.med, prec, s.lo, prec, s.hi)
}

// report prints every figure measured, and the table.
func (b *bench) report(w io.Writer, took time.Duration) {
	r := b.res
	get := func(name string) *series { return r.byName[name] }
	pg := "not measured"
	if b.pg != "" && !b.growthOnly {
		pg = "PostgreSQL " + postgresVersion(context.Background(), b.pg)
	}
	fmt.Fprintf(w, "devreg-bench: n=%d, %d runs, %d CPUs, sqlite3 %s, %s; rates: %s, %s each; took %s\n",
		b.n, b.runs, runtime.NumCPU(), sqliteVersion(), pg, b.load, b.rateTime, took.Round(time.Second))
	fmt.Fprintln(w, "Each figure: the median of the runs [least–greatest]. Each ratio is taken within a run, to a baseline measured in that run.")

	fmt.Fprintf(w, "\n%-34s %-22s %10s %12s %-22s\n", "baseline", "seconds", "rows/s", "peak_rss_MB", "to_exit_s")
	baselines := []struct{ name, note string }{
		{"sqlite3_import_sorted", ""}, {"sqlite3_import_shuffled", ""}, {"pg_copy_sorted", ""}, {"pg_copy_shuffled", ""},
		{"old_sqlite3_import", "  (devreg's first layout, the baseline before issue 17: for past figures only)"},
		{"old_pg_copy", "  (the same on PostgreSQL: for past figures only)"},
	}
	for _, bl := range baselines {
		s := get(bl.name)
		if s == nil {
			continue
		}
		v := spreadOf(s.values())
		rss := "-"
		if m := spreadOf(s.pick(func(m measure) float64 { return m.rssMB })); m.med > 0 {
			rss = fmt.Sprintf("%.0f", m.med)
		}
		toExit := "-"
		if s := get(bl.name + ":to_exit"); s != nil {
			toExit = spreadOf(s.values()).format(2)
		}
		fmt.Fprintf(w, "%-34s %-22s %10.0f %12s %-22s%s\n", bl.name, v.format(2), float64(b.n)/v.med, rss, toExit, bl.note)
	}

	fmt.Fprintln(w, "  (seconds: from the start of the .import or COPY to its commit; to_exit_s: the sqlite3 shell's whole run, with the")
	fmt.Fprintln(w, "  checkpoint it makes on closing, which devreg leaves to a background checkpoint after its answer)")

	fmt.Fprintf(w, "\n%-34s %-24s %-22s %10s %-22s %7s %8s\n", "request", "baseline", "seconds", "devices/s", "ratio", "cpu_s", "rss_MB")
	for _, name := range []string{"register_csv", "register_json", "resend_csv_unchanged", "dry_run_csv_new", "register_csv_shuffled",
		"pg_register_csv", "register_csv_vs_old", "pg_register_csv_vs_old"} {
		s := get(name)
		if s == nil {
			continue
		}
		v := spreadOf(s.values())
		fmt.Fprintf(w, "%-34s %-24s %-22s %10.0f %-22s %7.2f %8.0f\n", name, s.baseline, v.format(2), float64(b.n)/v.med,
			spreadOf(s.ratios()).format(2), spreadOf(s.pick(func(m measure) float64 { return m.cpu })).med,
			spreadOf(s.pick(func(m measure) float64 { return m.rssMB })).med)
	}
	if s := get("server_peak_rss"); s != nil {
		fmt.Fprintf(w, "%-34s %-24s %-22s %10s %-22s   (MB: the most of the four SQLite requests above; ratio to the sqlite3 shell's)\n",
			"server_peak_rss_MB", "sqlite3_import_sorted", spreadOf(s.values()).format(0), "", spreadOf(s.ratios()).format(2))
	}

	if s := get("stage:receive+parse+check_rules"); s != nil {
		fmt.Fprintf(w, "\n%-34s %-22s %-22s\n", "register_csv by stage", "seconds", "share")
		for _, name := range r.stageNames {
			s := get("stage:" + name)
			fmt.Fprintf(w, "%-34s %-22s %-22s\n", name, spreadOf(s.values()).format(2), spreadOf(s.ratios()).format(2))
		}
		fmt.Fprintln(w, "  (the first two by difference, on the same server and empty registry: a request refused at its first entry")
		fmt.Fprintln(w, "  hashes no secret, one refused at its last hashes and spools them all; server:... are the request's")
		fmt.Fprintln(w, "  Server-Timing: waiting for the store, the turn to write, inserting, recording the batch and committing.)")
	}

	if get("healthz") != nil {
		b.printRates(w)
	}

	if s := get("list_first_page"); s != nil {
		fmt.Fprintf(w, "\n%-34s %-22s %-22s\n", "listing, 100 devices", "ms", "ratio_to_first_page")
		fmt.Fprintf(w, "%-34s %-22s %-22s\n", "list_first_page", spreadOf(s.values()).format(2), "-")
		s = get("list_page_at_90pct")
		fmt.Fprintf(w, "%-34s %-22s %-22s\n", "list_page_at_90pct", spreadOf(s.values()).format(2), spreadOf(s.ratios()).format(2))
	}

	fmt.Fprintf(w, "\n%-34s %-22s %-22s %-22s %-22s\n", fmt.Sprintf("growth, batches of %d UUID-like", b.n/growthBatches),
		"seconds", "ratio_to_batch_01", "sqlite3_import_s", "import_ratio")
	for i := range growthBatches {
		reg, imp := get(fmt.Sprintf("growth_batch_%02d", i+1)), get(fmt.Sprintf("sqlite3_import_batch_%02d", i+1))
		fmt.Fprintf(w, "%-34s %-22s %-22s %-22s %-22s\n", fmt.Sprintf("growth_batch_%02d", i+1), spreadOf(reg.values()).format(3),
			spreadOf(reg.ratios()).format(2), spreadOf(imp.values()).format(3), spreadOf(imp.ratios()).format(2))
	}

	fmt.Fprintf(w, "\n%-52s %-22s %-8s %s\n", "issue 17 (SQLite unless said)", "now", "target", "")
	rows := []struct {
		label, name   string
		value, atMost bool // the value rather than the ratio; met when at most the target rather than at least
		target        float64
	}{
		{"CSV request / sqlite3 .import", "register_csv", false, true, 1.5},
		{"JSON request / sqlite3 .import", "register_json", false, true, 1.5},
		{"resend, all unchanged / sqlite3 .import", "resend_csv_unchanged", false, true, 1.0},
		{"dry run of new IDs / sqlite3 .import", "dry_run_csv_new", false, true, 1.0},
		{"server peak memory, MB", "server_peak_rss", true, true, 128},
		{"deep page / first page", "list_page_at_90pct", false, true, 1.1},
		{fmt.Sprintf("batch 10 / batch 1 of %d, UUID-like IDs", b.n/growthBatches), fmt.Sprintf("growth_batch_%02d", growthBatches), false, true, 1.3},
		{"PostgreSQL CSV request / COPY", "pg_register_csv", false, true, 2.0},
		{"device tokens/s / healthz/s", "token_issue", false, false, 0.5},
	}
	for _, row := range rows {
		s := get(row.name)
		if s == nil {
			fmt.Fprintf(w, "%-52s %-22s\n", row.label, "not measured")
			continue
		}
		xs, prec := s.ratios(), 2
		if row.value {
			xs, prec = s.values(), 0
		}
		sp := spreadOf(xs)
		cmp, met := "≥", sp.med >= row.target
		if row.atMost {
			cmp, met = "≤", sp.med <= row.target
		}
		verdict := "not met"
		if met {
			verdict = "met"
		}
		fmt.Fprintf(w, "%-52s %-22s %-8s %s\n", row.label, sp.format(prec), fmt.Sprintf("%s %g", cmp, row.target), verdict)
	}
}
