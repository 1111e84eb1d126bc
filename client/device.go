package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Token is a device token from the token endpoint.
type Token struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
}

// DeviceError is a refusal from a device endpoint (an OAuth 2.0 error).
type DeviceError struct {
	Status      int
	Code        string `json:"error"`
	Description string `json:"error_description"`
	RetryAfter  string
}

func (e *DeviceError) Error() string {
	s := fmt.Sprintf("%s (HTTP %d)", e.Code, e.Status)
	if e.Description != "" {
		s = e.Description + ": " + s
	}
	if e.RetryAfter != "" {
		s += ", retry after " + e.RetryAfter + "s"
	}
	return s
}

func deviceError(resp *http.Response) error {
	e := &DeviceError{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, e) != nil || e.Code == "" {
		e.Code, e.Description = "http_error", strings.TrimSpace(string(b))
	}
	return e
}

// DeviceToken gets a token for a device with the client credentials grant, sending its ID and
// secret with HTTP Basic (each form-encoded first, RFC 6749 §2.3.1). audience may be empty.
func DeviceToken(ctx context.Context, hc *http.Client, server, accountID, deviceID, secret, audience string) (Token, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	form := url.Values{"grant_type": {"client_credentials"}, "account_id": {accountID}}
	if audience != "" {
		form.Set("audience", audience)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(server, "/")+"/device/v1/token", strings.NewReader(form.Encode()))
	if err != nil {
		return Token{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(deviceID), url.QueryEscape(secret))
	resp, err := hc.Do(req)
	if err != nil {
		return Token{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Token{}, deviceError(resp)
	}
	var t Token
	return t, json.NewDecoder(resp.Body).Decode(&t)
}

// CheckIn reports a device's firmware version and status with its token. Empty firmware and a
// nil status are left out.
func CheckIn(ctx context.Context, hc *http.Client, server, token, firmware string, status json.RawMessage) error {
	if hc == nil {
		hc = http.DefaultClient
	}
	in := map[string]any{}
	if firmware != "" {
		in["firmware_version"] = firmware
	}
	if status != nil {
		in["status"] = status
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(server, "/")+"/device/v1/checkin", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return deviceError(resp)
	}
	return nil
}
