package httpapi

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"devreg"
	"devreg/devcert"
	"devreg/internal/reqbody"
	"devreg/semanifest"
)

// ManifestSignerHeader carries the certificate that must have signed a secure-element manifest:
// its DER in base64. The request names the signer rather than the type holding one, because a
// manifest signer is not a CA of the type (it vouches for a list, not for a device at login) and
// Microchip rotates it; the batch and the audit entry record its SHA-256, which the admin checks
// against the one Microchip publishes.
const ManifestSignerHeader = "Manifest-Signer"

// maxSignerHeader bounds the header: a real signer certificate is about 700 bytes of DER.
const maxSignerHeader = 8 << 10

// manifestSigner reads the signer certificate the request names in ManifestSignerHeader.
func manifestSigner(r *http.Request) (*x509.Certificate, error) {
	v := strings.TrimSpace(r.Header.Get(ManifestSignerHeader))
	if v == "" {
		return nil, devreg.Errorf(devreg.EBADREQUEST, "a manifest is checked against its signer's certificate: send it, DER in base64, in the %s header "+
			"(e.g. -H \"%s: $(openssl x509 -in signer.crt -outform der | base64 -w0)\")", ManifestSignerHeader, ManifestSignerHeader)
	}
	if len(v) > maxSignerHeader {
		return nil, devreg.Errorf(devreg.EBADREQUEST, "the %s header is longer than %d KiB; a signer certificate is about 1 KiB", ManifestSignerHeader, maxSignerHeader>>10)
	}
	der, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		der, err = base64.RawStdEncoding.DecodeString(v)
	}
	if err != nil {
		return nil, devreg.Errorf(devreg.EBADREQUEST, "the %s header is not base64 (send the signer certificate's DER in base64, not PEM)", ManifestSignerHeader)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, devreg.Errorf(devreg.EBADREQUEST, "the %s header is not an X.509 certificate: %v", ManifestSignerHeader, err)
	}
	return cert, nil
}

// manifestEntries yields the parts of a Microchip Trust&GO manifest as registration entries: each
// part registers by its device certificate, under the device ID the type's certificate_id_field
// reads from that certificate (Trust&GO's CN is "sn" and the chip's uniqueId in upper case), so
// that the ID registered is the one the device presents when it logs in. The manifest is read one
// entry at a time; the registration holds the entries as it holds any others.
type manifestEntries struct {
	r     *semanifest.Reader
	field devcert.IDField
}

// newManifestEntries reads the manifest in body, signed by signer, for a type whose certificates
// carry the device ID in field.
func newManifestEntries(body io.Reader, signer *x509.Certificate, field devcert.IDField) (devreg.EntrySource, error) {
	mr, err := semanifest.NewReader(body, signer, semanifest.Limits{})
	if err != nil {
		return nil, err
	}
	return reqbody.Entries(&manifestEntries{r: mr, field: field}), nil
}

func (m *manifestEntries) Next() (devreg.DeviceEntry, error) {
	e, err := m.r.Next()
	if err != nil {
		// The reader words what stops a manifest, but a body over --max-body is the server's limit.
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return devreg.DeviceEntry{}, reqbody.TooLarge(tooLarge)
		}
		return devreg.DeviceEntry{}, err
	}
	var clip devreg.ProblemList
	if e.Problem != "" {
		return devreg.DeviceEntry{Index: e.Index, DeviceID: e.DeviceID, Problem: fmt.Sprintf("manifest entry at byte offset %d (uniqueId %s): %s",
			e.Offset, clip.Clip(orUnknown(e.DeviceID)), e.Problem)}, nil
	}
	id, err := devcert.DeviceID(e.Certificate, m.field)
	if err != nil {
		return devreg.DeviceEntry{Index: e.Index, DeviceID: e.DeviceID, Problem: fmt.Sprintf("manifest entry at byte offset %d (uniqueId %s): certificate: %v",
			e.Offset, clip.Clip(e.DeviceID), err)}, nil
	}
	return devreg.DeviceEntry{
		Index:         e.Index,
		DeviceID:      id,
		Certificate:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.Certificate.Raw})),
		Intermediates: e.Chain,
	}, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// signerNote is what the batch and the audit entry keep of a manifest's signer.
func signerNote(signer *x509.Certificate) string {
	sum := sha256.Sum256(signer.Raw)
	return "manifest signed by sha256 " + hex.EncodeToString(sum[:])
}
