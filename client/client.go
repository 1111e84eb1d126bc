// Package client is a Go client of devreg's Operations API, for factory-line tools, scripts and
// the command line. Every call takes a context; refusals come back as *Error with the server's
// code, message and, for registrations, every problem it listed.
package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"devreg"
)

// Client talks to one devreg server with one API key.
type Client struct {
	baseURL string
	apiKey  string
	// HTTP is the HTTP client used; http.DefaultClient unless replaced.
	HTTP *http.Client
	// Retries says whether and how the client waits out a key's rate limit; the zero value
	// never retries, and a 429 comes back as an *Error with RetryAfter.
	Retries Retries
}

// New returns a client of the server at baseURL (such as "http://localhost:8080") using apiKey.
func New(baseURL, apiKey string) *Client {
	return &Client{baseURL: strings.TrimRight(baseURL, "/"), apiKey: apiKey, HTTP: http.DefaultClient}
}

// Error is a refusal from the server.
type Error struct {
	Status       int
	Code         string
	Message      string
	Problems     []devreg.Problem
	ProblemCount int
	Groups       []devreg.ProblemGroup // all the problems, by message
	// RetryAfter is when the server said to try again (its Retry-After header, as on 429), or 0.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.Status, e.Code)
}

// do sends a request with an optional body and decodes a JSON answer into out. A request refused
// with 429 is sent again as c.Retries allows, if its body can be sent again: none, or one that
// net/http can replay (bytes or a string, as the JSON bodies this client builds).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, contentType string, body io.Reader, out any) error {
	u := c.baseURL + "/api/v1" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	replayable := body == nil || req.GetBody != nil
	var resp *http.Response
	for retry := 1; ; retry++ {
		if resp, err = c.HTTP.Do(req); err != nil {
			return err
		}
		if resp.StatusCode < 300 {
			break
		}
		refusal := decodeError(resp)
		resp.Body.Close()
		if !replayable {
			return refusal
		}
		if again, err := c.Retries.Wait(ctx, refusal, retry); err != nil || !again {
			return cmp.Or(err, refusal)
		}
		if req.GetBody != nil {
			if req.Body, err = req.GetBody(); err != nil {
				return err
			}
		}
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("read the answer to %s %s: %w", method, path, err)
	}
	return nil
}

func decodeError(resp *http.Response) error {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Problems      []devreg.Problem      `json:"problems"`
		ProblemCount  int                   `json:"problem_count"`
		ProblemGroups []devreg.ProblemGroup `json:"problem_groups"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	wait := retryAfter(resp.Header.Get("Retry-After"))
	if err := json.Unmarshal(data, &body); err != nil || body.Error.Code == "" {
		return &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), RetryAfter: wait,
			Message: fmt.Sprintf("the server answered %s: %s", resp.Status, strings.TrimSpace(string(data[:min(len(data), 200)])))}
	}
	return &Error{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message, Problems: body.Problems, ProblemCount: body.ProblemCount,
		Groups: body.ProblemGroups, RetryAfter: wait}
}

// retryAfter reads a Retry-After header in seconds; 0 when there is none or it is a date, which
// devreg never sends.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	return c.do(ctx, method, path, nil, ct, body, out)
}

// IsCode reports whether err is a refusal from the server with the given code (devreg.E...).
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// DeviceTypeInput is what defines or changes a device type; nil fields are left out.
type DeviceTypeInput struct {
	Name            *string  `json:"name,omitempty"`
	Description     *string  `json:"description,omitempty"`
	MinSecretLength *int     `json:"min_secret_length,omitempty"`
	MQTTPublish     []string `json:"mqtt_publish,omitempty"`   // MQTT topic filters its devices may publish to
	MQTTSubscribe   []string `json:"mqtt_subscribe,omitempty"` // and subscribe to
	// RotationGraceSeconds is how long the secret a device rotates away from keeps working
	// (0 to 2592000; a pointer to 0 for no grace). Left out when creating: 604800, 7 days.
	RotationGraceSeconds *int `json:"rotation_grace_seconds,omitempty"`
	// MaxRotationsPerHour is how many times a device may rotate its secret itself in an hour
	// (1 to 1000). Left out when creating: 5.
	MaxRotationsPerHour *int `json:"max_rotations_per_hour,omitempty"`
	// CertificateIDField is where devices' certificates carry the device ID: subject_cn (the
	// default), san_uri or san_dns. AutoRegister lets devices with a certificate from a trusted
	// CA register themselves, at most AutoRegisterLimit an hour (1 to 100000; default 100).
	CertificateIDField *string `json:"certificate_id_field,omitempty"`
	AutoRegister       *bool   `json:"auto_register,omitempty"`
	AutoRegisterLimit  *int    `json:"auto_register_limit,omitempty"`
}

// CreateDeviceType defines a device type.
func (c *Client) CreateDeviceType(ctx context.Context, in DeviceTypeInput) (devreg.DeviceType, error) {
	var t devreg.DeviceType
	return t, c.doJSON(ctx, http.MethodPost, "/devicetypes", in, &t)
}

// ListDeviceTypes returns every device type of the account.
func (c *Client) ListDeviceTypes(ctx context.Context) ([]devreg.DeviceType, error) {
	var out struct {
		DeviceTypes []devreg.DeviceType `json:"device_types"`
	}
	return out.DeviceTypes, c.doJSON(ctx, http.MethodGet, "/devicetypes", nil, &out)
}

// DeviceType returns one device type.
func (c *Client) DeviceType(ctx context.Context, id string) (devreg.DeviceType, error) {
	var t devreg.DeviceType
	return t, c.doJSON(ctx, http.MethodGet, "/devicetypes/"+url.PathEscape(id), nil, &t)
}

// UpdateDeviceType changes the given fields of a device type.
func (c *Client) UpdateDeviceType(ctx context.Context, id string, in DeviceTypeInput) (devreg.DeviceType, error) {
	var t devreg.DeviceType
	return t, c.doJSON(ctx, http.MethodPatch, "/devicetypes/"+url.PathEscape(id), in, &t)
}

// DeleteDeviceType deletes a device type that has no devices.
func (c *Client) DeleteDeviceType(ctx context.Context, id string) error {
	return c.doJSON(ctx, http.MethodDelete, "/devicetypes/"+url.PathEscape(id), nil, nil)
}

// ListTrustedCAs returns the CA certificates a device type trusts, oldest first.
func (c *Client) ListTrustedCAs(ctx context.Context, deviceTypeID string) ([]devreg.TrustedCA, error) {
	var out struct {
		CAs []devreg.TrustedCA `json:"cas"`
	}
	return out.CAs, c.doJSON(ctx, http.MethodGet, "/devicetypes/"+url.PathEscape(deviceTypeID)+"/cas", nil, &out)
}

// AddTrustedCA makes a device type trust a CA certificate, given in PEM.
func (c *Client) AddTrustedCA(ctx context.Context, deviceTypeID, certificatePEM string) (devreg.TrustedCA, error) {
	var ca devreg.TrustedCA
	in := struct {
		Certificate string `json:"certificate"`
	}{certificatePEM}
	return ca, c.doJSON(ctx, http.MethodPost, "/devicetypes/"+url.PathEscape(deviceTypeID)+"/cas", in, &ca)
}

// DeleteTrustedCA makes a device type stop trusting one of its CA certificates.
func (c *Client) DeleteTrustedCA(ctx context.Context, deviceTypeID, caID string) error {
	return c.doJSON(ctx, http.MethodDelete, "/devicetypes/"+url.PathEscape(deviceTypeID)+"/cas/"+url.PathEscape(caID), nil, nil)
}

// Credential is a device ID and its secret, as registered.
type Credential struct {
	DeviceID string `json:"device_id"`
	Secret   string `json:"secret"`
}

// RegisterOptions are the query parameters of a registration.
type RegisterOptions struct {
	OnConflict devreg.OnConflict // fail (default), skip or replace
	DryRun     bool
	// Credentials, with OnConflict replace, says what happens to the credentials the replaced
	// devices made themselves: keep (default) or reset (dropped; the registered secret is then
	// each device's only credential).
	Credentials devreg.CredentialsOnReplace
	// BatchName names the batch the registration makes (at most 100 characters); empty for none.
	BatchName string
}

func (o RegisterOptions) query() url.Values {
	q := url.Values{}
	if o.BatchName != "" {
		q.Set("batch_name", o.BatchName)
	}
	if o.OnConflict != "" {
		q.Set("on_conflict", string(o.OnConflict))
	}
	if o.Credentials != "" {
		q.Set("credentials", string(o.Credentials))
	}
	if o.DryRun {
		q.Set("dry_run", "true")
	}
	return q
}

// Register registers a set of devices under a device type, all or none.
func (c *Client) Register(ctx context.Context, deviceTypeID string, devices []Credential, opts RegisterOptions) (devreg.RegisterResult, error) {
	b, err := json.Marshal(map[string][]Credential{"devices": devices})
	if err != nil {
		return devreg.RegisterResult{}, err
	}
	return c.register(ctx, deviceTypeID, "application/json", bytes.NewReader(b), opts)
}

// RegisterCSV registers the devices of a bulk upload file, streamed from r, all or none.
func (c *Client) RegisterCSV(ctx context.Context, deviceTypeID string, r io.Reader, opts RegisterOptions) (devreg.RegisterResult, error) {
	return c.register(ctx, deviceTypeID, "text/csv", r, opts)
}

func (c *Client) register(ctx context.Context, deviceTypeID, contentType string, body io.Reader, opts RegisterOptions) (devreg.RegisterResult, error) {
	var res devreg.RegisterResult
	err := c.do(ctx, http.MethodPut, "/devicetypes/"+url.PathEscape(deviceTypeID)+"/device_ids", opts.query(), contentType, body, &res)
	return res, err
}

// DeviceQuery selects devices to list; empty fields do not filter.
type DeviceQuery struct {
	DeviceTypeID string
	BatchID      string
	Prefix       string
	Status       devreg.DeviceStatus
	Connected    *bool
	Limit        int
	Cursor       string
}

// ListDevices returns one page of devices and the cursor of the next ("" on the last page).
func (c *Client) ListDevices(ctx context.Context, q DeviceQuery) ([]devreg.Device, string, error) {
	v := url.Values{}
	for k, s := range map[string]string{"device_type_id": q.DeviceTypeID, "batch_id": q.BatchID, "prefix": q.Prefix, "status": string(q.Status), "cursor": q.Cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Connected != nil {
		v.Set("connected", strconv.FormatBool(*q.Connected))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out struct {
		Devices    []devreg.Device `json:"devices"`
		NextCursor string          `json:"next_cursor"`
	}
	err := c.do(ctx, http.MethodGet, "/devices", v, "", nil, &out)
	return out.Devices, out.NextCursor, err
}

// Device returns one device.
func (c *Client) Device(ctx context.Context, deviceID string) (devreg.Device, error) {
	var d devreg.Device
	return d, c.doJSON(ctx, http.MethodGet, "/devices/"+url.PathEscape(deviceID), nil, &d)
}

// SetDeviceStatus enables or disables a device.
func (c *Client) SetDeviceStatus(ctx context.Context, deviceID string, status devreg.DeviceStatus) (devreg.Device, error) {
	var d devreg.Device
	return d, c.doJSON(ctx, http.MethodPatch, "/devices/"+url.PathEscape(deviceID), map[string]any{"status": status}, &d)
}

// DeleteDevice deletes a device.
func (c *Client) DeleteDevice(ctx context.Context, deviceID string) error {
	return c.doJSON(ctx, http.MethodDelete, "/devices/"+url.PathEscape(deviceID), nil, nil)
}

// ListCredentials returns a device's credentials, oldest first (never their secrets).
func (c *Client) ListCredentials(ctx context.Context, deviceID string) ([]devreg.Credential, error) {
	var out struct {
		Credentials []devreg.Credential `json:"credentials"`
	}
	return out.Credentials, c.doJSON(ctx, http.MethodGet, credentialsPath(deviceID), nil, &out)
}

func credentialsPath(deviceID string) string {
	return "/devices/" + url.PathEscape(deviceID) + "/credentials"
}

// AddCredential gives a device another credential (at most devreg.MaxCredentials): nc.Secret,
// which must meet the device type's secret policy, or with nc.Generate one the server makes and
// returns this once, in the answer's Secret, or nc.Certificate (PEM). Nil window ends mean no limit.
func (c *Client) AddCredential(ctx context.Context, deviceID string, nc devreg.NewCredential) (devreg.Credential, error) {
	in := struct {
		Secret      string     `json:"secret,omitempty"`
		Generate    bool       `json:"generate,omitempty"`
		NotBefore   *time.Time `json:"not_before,omitempty"`
		NotAfter    *time.Time `json:"not_after,omitempty"`
		Certificate string     `json:"certificate,omitempty"`
	}{nc.Secret, nc.Generate, nc.NotBefore, nc.NotAfter, nc.Certificate}
	var cr devreg.Credential
	return cr, c.doJSON(ctx, http.MethodPost, credentialsPath(deviceID), in, &cr)
}

// UpdateCredential enables or disables a device's credential or changes its window: Status when
// it is set, and each window end whose Set field is true (to nil: no limit). A change that would
// leave the device without a credential valid now is refused (ECONFLICT).
func (c *Client) UpdateCredential(ctx context.Context, deviceID, credentialID string, u devreg.CredentialUpdate) (devreg.Credential, error) {
	in := map[string]any{} // a window end sent as null removes the limit; one left out stays
	if u.Status != nil {
		in["status"] = *u.Status
	}
	if u.SetNotBefore {
		in["not_before"] = u.NotBefore
	}
	if u.SetNotAfter {
		in["not_after"] = u.NotAfter
	}
	var cr devreg.Credential
	return cr, c.doJSON(ctx, http.MethodPatch, credentialsPath(deviceID)+"/"+url.PathEscape(credentialID), in, &cr)
}

// DeleteCredential deletes a device's credential; tokens issued for it stop working. A device's
// last credential, or the only one valid now, cannot be deleted (ECONFLICT).
func (c *Client) DeleteCredential(ctx context.Context, deviceID, credentialID string) error {
	return c.doJSON(ctx, http.MethodDelete, credentialsPath(deviceID)+"/"+url.PathEscape(credentialID), nil, nil)
}

// RevokeCredentials deletes the credentials of a device that came from source (only
// devreg.CredentialFromDevice: those the device made itself by rotating) and returns how many. If
// nothing else would let the device in now, nothing is deleted (ECONFLICT).
func (c *Client) RevokeCredentials(ctx context.Context, deviceID string, source devreg.CredentialSource) (int, error) {
	var out struct {
		Deleted int `json:"deleted"`
	}
	err := c.do(ctx, http.MethodDelete, credentialsPath(deviceID), url.Values{"source": {string(source)}}, "", nil, &out)
	return out.Deleted, err
}

// RevokeBatchCredentials deletes, in one transaction, the credentials of a batch's devices that
// came from source (only devreg.CredentialFromDevice), leaving alone every device that nothing
// else would let in now; the answer counts and lists those.
func (c *Client) RevokeBatchCredentials(ctx context.Context, batchID string, source devreg.CredentialSource) (devreg.BatchRevocation, error) {
	var out devreg.BatchRevocation
	err := c.do(ctx, http.MethodDelete, "/batches/"+url.PathEscape(batchID)+"/credentials", url.Values{"source": {string(source)}}, "", nil, &out)
	return out, err
}

// ListBatches returns one page of batches, newest first, and the cursor of the next.
func (c *Client) ListBatches(ctx context.Context, deviceTypeID, cursor string) ([]devreg.Batch, string, error) {
	v := url.Values{}
	if deviceTypeID != "" {
		v.Set("device_type_id", deviceTypeID)
	}
	if cursor != "" {
		v.Set("cursor", cursor)
	}
	var out struct {
		Batches    []devreg.Batch `json:"batches"`
		NextCursor string         `json:"next_cursor"`
	}
	err := c.do(ctx, http.MethodGet, "/batches", v, "", nil, &out)
	return out.Batches, out.NextCursor, err
}

// Batch returns one batch.
func (c *Client) Batch(ctx context.Context, id string) (devreg.Batch, error) {
	var b devreg.Batch
	return b, c.doJSON(ctx, http.MethodGet, "/batches/"+url.PathEscape(id), nil, &b)
}

// SetBatchStatus enables or disables a whole batch.
func (c *Client) SetBatchStatus(ctx context.Context, id string, status devreg.BatchStatus) (devreg.Batch, error) {
	var b devreg.Batch
	return b, c.doJSON(ctx, http.MethodPatch, "/batches/"+url.PathEscape(id), map[string]any{"status": status}, &b)
}

// DeleteBatch deletes a batch and all of its devices, in one transaction, and returns how many
// devices went.
func (c *Client) DeleteBatch(ctx context.Context, id string) (int64, error) {
	var out struct {
		Deleted int64 `json:"deleted"`
	}
	err := c.do(ctx, http.MethodDelete, "/batches/"+url.PathEscape(id), nil, "", nil, &out)
	return out.Deleted, err
}

// CreateAPIKey makes an API key; its Key field holds the key, shown this once.
func (c *Client) CreateAPIKey(ctx context.Context, name string, scope devreg.Scope) (devreg.APIKey, error) {
	var k devreg.APIKey
	return k, c.doJSON(ctx, http.MethodPost, "/apikeys", map[string]any{"name": name, "scope": scope}, &k)
}

// CreateBrokerAPIKey makes an API key with the scope broker; with trustsBrokerTLS, devreg takes
// a login from it that carries only a certificate's common name (the broker verified the chain).
func (c *Client) CreateBrokerAPIKey(ctx context.Context, name string, trustsBrokerTLS bool) (devreg.APIKey, error) {
	var k devreg.APIKey
	return k, c.doJSON(ctx, http.MethodPost, "/apikeys", map[string]any{"name": name, "scope": devreg.ScopeBroker, "trusts_broker_tls": trustsBrokerTLS}, &k)
}

// ListAPIKeys lists the account's API keys, without the keys.
func (c *Client) ListAPIKeys(ctx context.Context) ([]devreg.APIKey, error) {
	var out struct {
		APIKeys []devreg.APIKey `json:"api_keys"`
	}
	return out.APIKeys, c.doJSON(ctx, http.MethodGet, "/apikeys", nil, &out)
}

// DeleteAPIKey revokes an API key.
func (c *Client) DeleteAPIKey(ctx context.Context, id string) error {
	return c.doJSON(ctx, http.MethodDelete, "/apikeys/"+url.PathEscape(id), nil, nil)
}
