package registry_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/registry"
	"devreg/webhook"
)

// TestPatchingAWebhookChecksOnlyWhatChanges: a webhook whose URL no longer passes the guard (the
// server restarted without --webhook-allow-private, or its host no longer resolves) can still be
// disabled or moved in the account's events, which touch no URL; a new URL is checked, and a
// resume_after past the account's newest event, which would silence the webhook until the
// account has made that many, is refused, as are more event types than the API's document allows.
func TestPatchingAWebhookChecksOnlyWhatChanges(t *testing.T) {
	pgtest.Each(t, testPatchingAWebhookChecksOnlyWhatChanges)
}

func testPatchingAWebhookChecksOnlyWhatChanges(t *testing.T, url string) {
	svc, _ := registry.OpenTestService(t, url)
	_, admin := makerA(t, svc)
	svc.WebhookGuard = webhook.Guard{AllowPrivate: true}
	w, err := svc.CreateWebhook(admin, "http://127.0.0.1:9/hook", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	svc.WebhookGuard = webhook.Guard{} // as after a restart without --webhook-allow-private
	off, zero := false, int64(0)
	if _, err := svc.UpdateWebhook(admin, w.ID, devreg.WebhookUpdate{Enabled: &off}); err != nil {
		t.Errorf("disabling a webhook whose URL the guard now refuses: %v", err)
	}
	if _, err := svc.UpdateWebhook(admin, w.ID, devreg.WebhookUpdate{ResumeAfter: &zero}); err != nil {
		t.Errorf("moving a webhook whose URL the guard now refuses: %v", err)
	}
	again := "http://127.0.0.1:9/other"
	if _, err := svc.UpdateWebhook(admin, w.ID, devreg.WebhookUpdate{URL: &again}); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("a new loopback URL = %v, want it refused", err)
	}
	bad := []string{"no.such"}
	if _, err := svc.UpdateWebhook(admin, w.ID, devreg.WebhookUpdate{EventTypes: &bad}); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("an unknown event type = %v, want it refused", err)
	}
	// The API's document allows 64 types; a list of thousands would be looked through at every
	// delivery and shown in every listing.
	many := slices.Repeat([]string{"device.update"}, 10000)
	if _, err := svc.UpdateWebhook(admin, w.ID, devreg.WebhookUpdate{EventTypes: &many}); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("10,000 event types = %v, want them refused", err)
	}
	svc.WebhookGuard = webhook.Guard{AllowPrivate: true}
	if _, err := svc.CreateWebhook(admin, "http://127.0.0.1:9/many", many, true); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("a webhook of 10,000 event types = %v, want it refused", err)
	}
	svc.WebhookGuard = webhook.Guard{}

	events, newest, err := svc.Events(admin, 0, 0)
	if err != nil || len(events) == 0 {
		t.Fatalf("events = %v, %v", events, err)
	}
	for _, after := range []int64{newest + 1, 1 << 62} {
		if _, err := svc.UpdateWebhook(admin, w.ID, devreg.WebhookUpdate{ResumeAfter: &after}); devreg.ErrorCode(err) != devreg.EINVALID {
			t.Errorf("resume_after %d past the newest event %d = %v, want it refused", after, newest, err)
		}
	}
	got, err := svc.Webhook(admin, w.ID)
	if err != nil || got.DeliveredSeq > newest {
		t.Errorf("webhook = %+v, %v; want it at most at the newest event %d", got, err, newest)
	}
	if _, err := svc.UpdateWebhook(admin, w.ID, devreg.WebhookUpdate{ResumeAfter: &newest}); err != nil {
		t.Errorf("resume_after the newest event: %v", err)
	}
}

// TestOneAccountCannotTakeEveryEventWait: an account that opens hundreds of long polls at once
// takes no more than its share of the server's places for waiting requests; another account's
// long poll still waits for its events instead of being answered at once (and so polling hot).
func TestOneAccountCannotTakeEveryEventWait(t *testing.T) {
	svc, _ := registry.OpenTestService(t, "sqlite:"+t.TempDir()+"/devreg.db")
	_, admin := makerA(t, svc)
	other, _, err := svc.NewAccount(context.Background(), "Maker B", "owner@b.example", "password-b")
	if err != nil {
		t.Fatal(err)
	}
	otherAdmin := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: other.ID, Scope: devreg.ScopeAdmin, Name: "admin key", Source: devreg.SourceAPI})
	_, newest, err := svc.Events(admin, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, otherNewest, err := svc.Events(otherAdmin, 0, 0)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(admin)
	var wg sync.WaitGroup
	for range 300 {
		wg.Go(func() { svc.Events(ctx, newest, devreg.MaxEventWait) })
	}
	defer wg.Wait()
	defer cancel()
	time.Sleep(time.Second) // the flood's requests take their places

	start := time.Now()
	events, _, err := svc.Events(otherAdmin, otherNewest, 2*time.Second)
	if took := time.Since(start); err != nil || len(events) != 0 || took < 1500*time.Millisecond {
		t.Errorf("another account's long poll of 2 s answered %v, %v after %s; want it to wait", events, err, took)
	}
}
