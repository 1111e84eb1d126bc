package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// rateFigure is a request rate over loopback HTTP.
type rateFigure struct {
	name     string
	requests int
	elapsed  time.Duration
	base     float64 // the baseline's requests/s, 0 for the baseline itself
}

func (f rateFigure) String() string {
	rate := float64(f.requests) / f.elapsed.Seconds()
	ratio := "-"
	if f.base > 0 {
		ratio = fmt.Sprintf("%.2f", rate/f.base)
	}
	return fmt.Sprintf("%-28s %10.0f %8.2f %6s", f.name, rate, f.elapsed.Seconds(), ratio)
}

// tokenFigures measures token issues per second, and broker logins per second with the secret
// and with a token as the password (EMQX's authenticator, as a broker calls it), next to the
// same server's /healthz rate, each with a few keep-alive clients at once.
func tokenFigures(ctx context.Context, serverURL, accountID, deviceID, secret, brokerKey string, n int) ([]rateFigure, error) {
	const clients = 4
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	run := func(do func() error) (time.Duration, error) {
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range n / clients {
					if err := do(); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return time.Since(start), <-errs
	}
	healthz, err := run(func() error {
		resp, err := hc.Get(serverURL + "/healthz")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("/healthz answered %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	form := url.Values{"grant_type": {"client_credentials"}, "account_id": {accountID}}.Encode()
	tokens, err := run(func() error {
		req, _ := http.NewRequestWithContext(ctx, "POST", serverURL+"/device/v1/token", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(deviceID), url.QueryEscape(secret))
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("token endpoint answered %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", serverURL+"/device/v1/token", strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(deviceID), url.QueryEscape(secret))
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	brokerLogin := func(password string) func() error {
		body, _ := json.Marshal(map[string]string{"username": deviceID, "password": password, "clientid": deviceID, "peerhost": "10.0.0.7"})
		return func() error {
			req, _ := http.NewRequestWithContext(ctx, "POST", serverURL+"/broker/v1/emqx/authn", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+brokerKey)
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"allow"`)) {
				return fmt.Errorf("broker login answered %d %s", resp.StatusCode, b)
			}
			return nil
		}
	}
	withSecret, err := run(brokerLogin(secret))
	if err != nil {
		return nil, err
	}
	withToken, err := run(brokerLogin(tok.AccessToken))
	if err != nil {
		return nil, err
	}
	base := float64(n) / healthz.Seconds()
	return []rateFigure{
		{name: "healthz", requests: n, elapsed: healthz},
		{name: "token_issue", requests: n, elapsed: tokens, base: base},
		{name: "broker_login_secret", requests: n, elapsed: withSecret, base: base},
		{name: "broker_login_token", requests: n, elapsed: withToken, base: base},
	}, nil
}
