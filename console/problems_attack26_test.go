package console_test

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// problemFilesOpen sums the sizes of the problem files this process holds open (they are
// removed at once, so only /proc/self/fd still names them).
func problemFilesOpen(t *testing.T) (n int, bytes int64) {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		p := filepath.Join("/proc/self/fd", fd.Name())
		target, err := os.Readlink(p)
		if err != nil || !strings.Contains(target, "devreg-problems-") {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			n++
			bytes += fi.Size()
		}
	}
	return n, bytes
}

// TestProblemDownloadsShareABound: downloads of every problem of a file, made at once by clients
// that do not read the answer (and so keep the files open as long as they like), hold no more
// temporary disk together than one download may (/tmp is a tmpfs, memory, in the compose file):
// each file of 1.2 million short secrets makes some 100 MiB of problems from 13 MB sent, and
// three of them held 292 MiB; a download that finds no room left says so in its last row.
func TestProblemDownloadsShareABound(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	dt := e.createType(t, "Lock")
	var file bytes.Buffer
	for i := range 1_200_000 {
		fmt.Fprintf(&file, "s%07d,x\n", i)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("device_type_id", dt)
	fw, _ := mw.CreateFormFile("file", "lot.csv")
	fw.Write(file.Bytes())
	mw.Close()
	body := buf.Bytes()

	const downloads = 3
	resps := make([]*http.Response, downloads)
	var wg sync.WaitGroup
	for i := range downloads {
		wg.Go(func() {
			resp, err := e.http.Post(e.url+"/devices/upload/problems", mw.FormDataContentType(), bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			resps[i] = resp // its answer is not read
		})
	}
	wg.Wait()
	n, size := problemFilesOpen(t)
	if size > 256<<20+64<<10 {
		t.Errorf("%d downloads hold %d problem files of %d MiB at once; want 256 MiB at most together", downloads, n, size>>20)
	}
	// Each answer has every problem, or those that fit and a last row that counts the rest and
	// says why they are not there.
	crowded := 0
	for i, resp := range resps {
		if resp == nil {
			continue
		}
		r := csv.NewReader(resp.Body)
		rows, last := 0, []string(nil)
		for {
			rec, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("download %d: %v", i, err)
			}
			rows, last = rows+1, rec
		}
		resp.Body.Close()
		problems := rows - 1 // the header
		if problems == 1_200_000 {
			continue
		}
		var more int
		fmt.Sscanf(strings.ReplaceAll(last[3], ",", ""), "and %d more problems", &more)
		if problems-1+more != 1_200_000 || !strings.Contains(last[3], "other downloads of problems under way") {
			t.Errorf("download %d has %d rows ending in %q; want 1,200,000 problems, or those that fit and the count of the rest", i, problems, last)
		}
		crowded++
	}
	if crowded == 0 {
		t.Errorf("every download had every problem: the bound was not reached")
	}
	// The handlers close their files once the answers are out, a moment after the client has read them.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		n, _ := problemFilesOpen(t)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d problem files are still open after the downloads", n)
			break
		}
	}
}

// TestProblemDownloadRefusesStrangers: the download of problems answers no one who is not logged
// in and no form sent from another site, and it keeps every device ID a spreadsheet would run as
// a formula from running.
func TestProblemDownloadRefusesStrangers(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	dt := e.createType(t, "Lock")
	file := "+1,a-long-secret-1\n-1,a-long-secret-2\n@SUM(1),a-long-secret-3\n\"\t=1+1\",a-long-secret-4\n"
	form := func() (string, *bytes.Buffer) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("device_type_id", dt)
		fw, _ := mw.CreateFormFile("file", "lot.csv")
		io.WriteString(fw, file)
		mw.Close()
		return mw.FormDataContentType(), &buf
	}

	stranger := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ct, body := form()
	resp, err := stranger.Post(e.url+"/devices/upload/problems", ct, body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == 200 || strings.Contains(resp.Header.Get("Content-Type"), "csv") || strings.Contains(string(b), "SUM") {
		t.Errorf("a stranger's download = %d %s:\n%.300s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}

	ct, body = form()
	req, _ := http.NewRequest("POST", e.url+"/devices/upload/problems", body)
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err = e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || strings.Contains(string(b), "SUM") {
		t.Errorf("a download sent from another site = %d:\n%.300s", resp.StatusCode, b)
	}

	resp2, csvBody := e.uploadTo(t, "/devices/upload/problems", map[string]string{"device_type_id": dt}, "lot.csv", file)
	rows, err := csv.NewReader(strings.NewReader(csvBody)).ReadAll()
	if err != nil || resp2.StatusCode != 200 || len(rows) != 5 {
		t.Fatalf("download = %d, %v:\n%s", resp2.StatusCode, err, csvBody)
	}
	for _, r := range rows[1:] {
		if !strings.HasPrefix(r[2], "'") {
			t.Errorf("device ID cell %q would run as a formula", r[2])
		}
	}
}
