package main

import (
	"context"
	"fmt"

	"devreg"
)

// credentialsRevoke revokes the credentials devices made themselves, of one device or of a whole
// batch: what an administrator runs when a lot's factory secrets leaked and strangers rotated them.
func (m *Main) credentialsRevoke(ctx context.Context, args []string) error {
	fs := m.flagSet("credentials revoke", "credentials revoke --source device (--device ID | --batch ID)\n\n"+
		"Deletes the credentials that devices made themselves by rotating (POST /device/v1/credentials),\n"+
		"of one device or of every device of a batch, and prints the result as JSON. A device that no\n"+
		"other credential lets in now is left as it was: for one device that is a refusal (exit 1); for\n"+
		"a batch those devices are counted and listed under \"problems\". Needs an admin key.\n\n"+
		"Example:\n  devreg credentials revoke --source device --batch bat_abc123")
	server, apiKey := m.clientFlags(fs)
	source := fs.String("source", "", "which credentials to revoke: device (those the devices made themselves; required)")
	deviceID := fs.String("device", "", "the device `ID` whose credentials to revoke")
	batchID := fs.String("batch", "", "the batch `ID` whose devices' credentials to revoke")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if *source != string(devreg.CredentialFromDevice) {
		return usageError{"--source device is required: only the credentials devices made themselves are revoked together"}
	}
	if (*deviceID == "") == (*batchID == "") {
		return usageError{"give either --device ID or --batch ID"}
	}
	c, err := m.newClient(*server, *apiKey)
	if err != nil {
		return err
	}
	if *deviceID != "" {
		n, err := c.RevokeCredentials(ctx, *deviceID, devreg.CredentialFromDevice)
		if err != nil {
			return explain(*server, err)
		}
		return m.printJSON(map[string]int{"deleted": n})
	}
	res, err := c.RevokeBatchCredentials(ctx, *batchID, devreg.CredentialFromDevice)
	if err != nil {
		return explain(*server, err)
	}
	if res.DevicesLeft > 0 {
		fmt.Fprintf(m.Stderr, "devreg: %d devices were left as they were: nothing but the credentials they made themselves lets them in now (see \"problems\")\n", res.DevicesLeft)
	}
	return m.printJSON(res)
}
