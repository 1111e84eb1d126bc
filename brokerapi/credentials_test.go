package brokerapi_test

import (
	"context"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// TestBrokerLoginWithCredentials: a broker lets a device in with any of its valid credentials
// and with a token of one, and refuses a deleted or disabled credential's secret and tokens.
func TestBrokerLoginWithCredentials(t *testing.T) { pgtest.Each(t, testBrokerLoginWithCredentials) }

func testBrokerLoginWithCredentials(t *testing.T, database string) {
	f := newFleet(t, database)
	admin := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: f.account, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
	authn := func(pass string) string {
		_, b := f.post(t, "/broker/v1/emqx/authn", "application/json", js(map[string]string{"username": "d1", "password": pass, "clientid": "d1"}))
		return b
	}
	second, err := f.srv.Service.AddCredential(admin, "d1", devreg.NewCredential{Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	for name, pass := range map[string]string{"registered secret": "secretford1", "second secret": second.Secret, "token": f.token} {
		if got := authn(pass); !strings.Contains(got, `"result":"allow"`) {
			t.Errorf("%s: %s, want allow", name, got)
		}
	}
	creds, err := f.srv.Service.ListCredentials(admin, "d1")
	if err != nil || len(creds) != 2 {
		t.Fatalf("credentials %+v, %v", creds, err)
	}
	// f.token was issued for the registered credential.
	if err := f.srv.Service.DeleteCredential(admin, "d1", creds[0].ID); err != nil {
		t.Fatal(err)
	}
	for name, pass := range map[string]string{"deleted credential's secret": "secretford1", "deleted credential's token": f.token} {
		if got := authn(pass); !strings.Contains(got, `"result":"deny"`) {
			t.Errorf("%s: %s, want deny", name, got)
		}
	}
	if got := authn(second.Secret); !strings.Contains(got, `"result":"allow"`) {
		t.Errorf("the credential left: %s, want allow", got)
	}
}
