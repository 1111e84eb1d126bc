package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
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

// DeviceTokenByCertificate gets a token for a device that authenticates with the TLS client
// certificate hc presents (OAuth 2.0 mutual-TLS client authentication, RFC 8705 tls_client_auth):
// the form names the device as client_id and carries no secret. hc must be made with a TLS
// configuration holding the device's certificate, such as DeviceTLSConfig's.
func DeviceTokenByCertificate(ctx context.Context, hc *http.Client, server, accountID, deviceID, audience string) (Token, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "account_id": {accountID}, "client_id": {deviceID}}
	if audience != "" {
		form.Set("audience", audience)
	}
	var t Token
	return t, postForm(ctx, hc, server, "/device/v1/token", nil, form, http.StatusOK, &t)
}

// DeviceTLSConfig is the TLS configuration of a device: its certificate (certFile, PEM, the
// device's certificate first, then any intermediates) and private key (keyFile, PEM), both
// optional, and the CAs it trusts for the server in caFile (PEM; empty for the system's).
func DeviceTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("a client certificate needs both its certificate and its private key file")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("the device certificate %s with key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
	}
	return cfg, nil
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
	return postForm(ctx, hc, server, path, func(req *http.Request) { req.SetBasicAuth(url.QueryEscape(deviceID), url.QueryEscape(secret)) }, form, want, out)
}

// postForm posts form to a device endpoint, authenticated by auth if it is not nil (else by
// the TLS connection alone), and decodes the answer, which must have the status want, into out.
func postForm(ctx context.Context, hc *http.Client, server, path string, auth func(*http.Request), form url.Values, want int, out any) error {
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(server, "/")+path, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth != nil {
		auth(req)
	}
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
