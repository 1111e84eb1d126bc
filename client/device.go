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

	"devreg"
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
	form := url.Values{"grant_type": {"client_credentials"}, "account_id": {accountID}}
	if audience != "" {
		form.Set("audience", audience)
	}
	var t Token
	return t, postAsDevice(ctx, hc, server, "/device/v1/token", deviceID, secret, form, http.StatusOK, &t)
}

// RotateCredential replaces a device's secret at the device's request: it authenticates with its
// current secret, as at the token endpoint, and gets a new secret the server generated (shown this
// once). The secret it authenticated with keeps working until the answer's PreviousNotAfter (the
// device type's rotation grace), so a device that loses the answer can log in and rotate again.
func RotateCredential(ctx context.Context, hc *http.Client, server, accountID, deviceID, secret string) (devreg.Rotation, error) {
	var rot devreg.Rotation
	return rot, postAsDevice(ctx, hc, server, "/device/v1/credentials", deviceID, secret, url.Values{"account_id": {accountID}}, http.StatusCreated, &rot)
}

// postAsDevice posts form to a device endpoint that the device authenticates at with HTTP Basic,
// and decodes the answer, which must have the status want, into out.
func postAsDevice(ctx context.Context, hc *http.Client, server, path, deviceID, secret string, form url.Values, want int, out any) error {
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(server, "/")+path, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(deviceID), url.QueryEscape(secret))
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		return deviceError(resp)
	}
	return json.NewDecoder(resp.Body).Decode(out)
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
