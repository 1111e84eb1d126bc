// Package dpstest gives tests a second, independent derivation of enrollment group secrets: the
// one Azure DPS documents, run with openssl, and the example its documentation prints.
package dpstest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The example of Microsoft's "How to provision legacy devices using symmetric keys"
// (https://docs.microsoft.com/en-us/azure/iot-dps/how-to-legacy-device-symm-key, section "Derive a
// device key"; source MicrosoftDocs/azure-docs, articles/iot-dps/how-to-legacy-device-symm-key.md):
// the group's primary key, a registration ID and the derived device key the page prints for them,
// the same in its openssl and PowerShell examples. (A 2018 revision of the page printed
// 9GWVnYuoOLXlHc346XjhLRb9pKgIOrKSwxDRSOgnvXo= for the same inputs, which no implementation
// reproduces; later revisions print the value below.) The key is 64 bytes, DPS's default length.
const (
	DocGroupKey       = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	DocRegistrationID = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	DocDerivedKey     = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
)

// Pipeline is the Linux shell derivation of Azure's documentation, run as written with KEY (the
// group key in base64) and REG_ID (the device ID) from the environment.
const Pipeline = `echo -n $REG_ID | openssl dgst -sha256 -mac HMAC -macopt hexkey:$(echo $KEY | base64 --decode | xxd -p -u -c 1000) -binary | base64`

// OpenSSL returns the secret Pipeline derives for deviceID from groupKey (base64). The tools it
// needs are part of the test environment: a missing one fails the test rather than skipping it.
func OpenSSL(t testing.TB, groupKey, deviceID string) string {
	t.Helper()
	for _, tool := range []string{"bash", "openssl", "base64", "xxd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to check the derivation against Azure's documented openssl pipeline: %v", tool, err)
		}
	}
	cmd := exec.Command("bash", "-c", "set -o pipefail; "+Pipeline)
	cmd.Env = append(os.Environ(), "KEY="+groupKey, "REG_ID="+deviceID)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("openssl pipeline for %q: %v %s", deviceID, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}
