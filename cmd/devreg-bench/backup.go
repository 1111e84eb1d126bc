package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"devreg/client"
	"devreg/credential"
)

// backupLot is how many devices each registration of the backup figures sends: a factory lot.
const backupLot = 10_000

// backupPause is the pause between registrations during a backup, so that the registry grows by a
// few lots per backup rather than by as many as the backup lasts.
const backupPause = 200 * time.Millisecond

// backupRun is one devreg backup, timed.
type backupRun struct {
	devices int64
	size    int64
	elapsed time.Duration
}

func (r backupRun) mbPerSecond() float64 { return float64(r.size) / 1e6 / r.elapsed.Seconds() }

// backupFigure is what backupFigures measured.
type backupFigure struct {
	idle, loaded       backupRun     // the median backups with nothing else going on, and while registering
	regIdle, regDuring time.Duration // the median registration of backupLot devices without and during a backup
	lots               int           // registrations that ran wholly during a backup
}

func (f backupFigure) print() {
	fmt.Printf("\n%-36s %10s %10s %8s %8s %6s\n", "figure", "devices", "MB", "seconds", "MB/s", "ratio")
	fmt.Printf("%-36s %10d %10.1f %8.2f %8.1f %6s\n", "backup_idle", f.idle.devices, float64(f.idle.size)/1e6, f.idle.elapsed.Seconds(), f.idle.mbPerSecond(), "-")
	fmt.Printf("%-36s %10d %10.1f %8.2f %8.1f %6.2f\n", "backup_while_registering", f.loaded.devices, float64(f.loaded.size)/1e6,
		f.loaded.elapsed.Seconds(), f.loaded.mbPerSecond(), f.idle.mbPerSecond()/f.loaded.mbPerSecond())
	fmt.Printf("\n%-36s %10s %6s\n", "figure", "ms", "ratio")
	fmt.Printf("%-36s %10.0f %6s\n", fmt.Sprintf("register_%dk_alone", backupLot/1000), ms(f.regIdle), "-")
	fmt.Printf("%-36s %10.0f %6.2f  (%d registrations)\n", fmt.Sprintf("register_%dk_during_backup", backupLot/1000), ms(f.regDuring),
		f.regDuring.Seconds()/f.regIdle.Seconds(), f.lots)
}

// backupFigures measures devreg backup of the registry in data, which a server is serving through
// c: alone, and while registrations of backupLot devices follow one another under typeID; and
// how much slower those registrations are while a backup runs than without one. The ratio of a
// backup under load is its MB/s alone over its MB/s under load, as the registry grows meanwhile.
func backupFigures(ctx context.Context, bin, dir, data string, c *client.Client, typeID string) (backupFigure, error) {
	var f backupFigure
	lotNo := 0
	register := func() (time.Duration, error) {
		lotNo++
		var sb strings.Builder
		for i := range backupLot {
			fmt.Fprintf(&sb, "%s, %s,\n", deviceID(fmt.Sprintf("bk%03d", lotNo), i), credential.RandomString(24))
		}
		start := time.Now()
		res, err := c.RegisterCSV(ctx, typeID, strings.NewReader(sb.String()), client.RegisterOptions{})
		if err != nil {
			return 0, fmt.Errorf("registration %d: %w", lotNo, err)
		}
		if res.Created != backupLot {
			return 0, fmt.Errorf("registration %d: unexpected result %+v", lotNo, res)
		}
		return time.Since(start), nil
	}
	backupNo := 0
	backup := func() (backupRun, error) {
		backupNo++
		cmd := exec.Command(bin, "backup", "--data", data, "--to", filepath.Join(dir, fmt.Sprintf("backup-%d.db", backupNo)))
		cmd.Stderr = os.Stderr
		start := time.Now()
		out, err := cmd.Output()
		elapsed := time.Since(start)
		if err != nil {
			return backupRun{}, fmt.Errorf("devreg backup: %v", err)
		}
		var s struct {
			File    string `json:"file"`
			Size    int64  `json:"size"`
			Devices int64  `json:"devices"`
		}
		if err := json.Unmarshal(out, &s); err != nil {
			return backupRun{}, fmt.Errorf("devreg backup printed %q: %v", out, err)
		}
		return backupRun{devices: s.Devices, size: s.Size, elapsed: elapsed}, os.Remove(s.File)
	}
	medianRun := func(runs []backupRun) backupRun {
		slices.SortFunc(runs, func(a, b backupRun) int { return cmp.Compare(a.elapsed, b.elapsed) })
		return runs[len(runs)/2]
	}

	fmt.Fprintln(os.Stderr, "backing up with nothing else going on...")
	var idle []backupRun
	for range 3 {
		r, err := backup()
		if err != nil {
			return f, err
		}
		idle = append(idle, r)
	}
	f.idle = medianRun(idle)

	fmt.Fprintf(os.Stderr, "registering lots of %d with no backup running...\n", backupLot)
	var alone []time.Duration
	for range 9 {
		d, err := register()
		if err != nil {
			return f, err
		}
		alone = append(alone, d)
		time.Sleep(backupPause)
	}
	f.regIdle = median(alone)

	fmt.Fprintf(os.Stderr, "registering lots of %d while backups run...\n", backupLot)
	var during []time.Duration
	var loaded []backupRun
	for len(during) < 9 || len(loaded) < 3 {
		type result struct {
			run backupRun
			err error
		}
		ended := make(chan result, 1)
		go func() {
			r, err := backup()
			ended <- result{r, err}
		}()
		for running := true; running; {
			d, err := register()
			if err != nil {
				<-ended
				return f, err
			}
			select {
			case res := <-ended:
				if res.err != nil {
					return f, res.err
				}
				loaded = append(loaded, res.run)
				running = false // this registration outlasted the backup: not counted
			default:
				during = append(during, d)
				time.Sleep(backupPause)
			}
		}
	}
	f.loaded, f.regDuring, f.lots = medianRun(loaded), median(during), len(during)
	return f, nil
}

// runBackupOnly registers n devices through a real server and measures only the backup figures.
func runBackupOnly(n int) error {
	dir, err := os.MkdirTemp("", "devreg-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := devregBinary(dir, "")
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "generating %d devices...\n", n)
	csvA, err := writeFile(dir, "a.csv", n, "a", func(w io.Writer, id, secret string, last bool) { fmt.Fprintf(w, "%s, %s,\n", id, secret) })
	if err != nil {
		return err
	}
	data := filepath.Join(dir, "data")
	ctx := context.Background()
	_, apiKey, err := createAccount(ctx, bin, nil, "--data", data)
	if err != nil {
		return err
	}
	url, srv, err := serve(bin, "--data", data, "--api-rate-limit", "1000000")
	if err != nil {
		return err
	}
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	c := client.New(url, apiKey)
	name := "bench backup"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "registering %d devices...\n", n)
	file, err := os.Open(csvA)
	if err != nil {
		return err
	}
	defer file.Close()
	if _, err := c.RegisterCSV(ctx, dt.ID, file, client.RegisterOptions{}); err != nil {
		return err
	}
	f, err := backupFigures(ctx, bin, dir, data, c, dt.ID)
	if err != nil {
		return err
	}
	f.print()
	return nil
}
