package registry_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"devreg"
	"devreg/registry"
)

// TestNamesRefuseInvisibleCharacters: every name (device types, API keys, accounts and their
// owners' emails) refuses the characters that can make it look like another in the console —
// bidi controls, zero-width and other format characters, line separators —, saying which
// character and where. Descriptions refuse bidi controls only; uploaded file names lose them all.
func TestNamesRefuseInvisibleCharacters(t *testing.T) {
	svc, _ := registry.OpenTestService(t, "sqlite:"+filepath.Join(t.TempDir(), "devreg.db"))
	_, admin := makerA(t, svc)
	dt, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: "existing"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := svc.CreateAPIKey(admin, devreg.NewAPIKey{Name: "existing", Scope: devreg.ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	// Each way a name is given, as a function of the name.
	uses := map[string]func(name string) error{
		"devicetype.create": func(name string) error {
			n++ // names are unique in an account; the suffix does not move a character
			_, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: fmt.Sprintf("%s #%d", name, n)})
			return err
		},
		"devicetype.update": func(name string) error {
			_, err := svc.UpdateDeviceType(admin, dt.ID, devreg.DeviceTypeUpdate{Name: &name})
			return err
		},
		"apikey.create": func(name string) error {
			k, err := svc.CreateAPIKey(admin, devreg.NewAPIKey{Name: name, Scope: devreg.ScopeRead})
			if err != nil {
				return err
			}
			// Key names are unique in an account: free the name for apikey.update's turn.
			return svc.DeleteAPIKey(admin, k.ID)
		},
		"apikey.update": func(name string) error {
			if _, err := svc.UpdateAPIKey(admin, key.ID, devreg.APIKeyUpdate{Name: &name}); err != nil {
				return err
			}
			_, err := svc.UpdateAPIKey(admin, key.ID, devreg.APIKeyUpdate{Name: &key.Name}) // the name free again
			return err
		},
		"account.create": func(name string) error {
			n++
			_, _, err := svc.NewAccount(context.Background(), name, fmt.Sprintf("owner-%d@example.test", n), "password-1")
			return err
		},
		"account.create/email": func(name string) error {
			_, _, err := svc.NewAccount(context.Background(), "Maker", strings.ReplaceAll(name, " ", "")+"@example.test", "password-1")
			return err
		},
	}
	tests := []struct {
		name, value string
		says        string // "" if allowed
	}{
		{"ok/plain", "Thermostat T1", ""},
		{"ok/accents-and-scripts", "Café Zürich 東京 שלום", ""},
		{"ok/emoji-with-variation-selector", "Heat \u2668\ufe0f", ""},
		{"refused/right-to-left-override", "Thermo\u202estat", "contains the bidi control U+202E at character 7"},
		{"refused/left-to-right-isolate", "A\u2066B\u2069", "contains the bidi control U+2066 at character 2"},
		{"refused/right-to-left-mark", "\u200fLine", "contains the bidi control U+200F at character 1"},
		{"refused/arabic-letter-mark", "Line\u061c3", "contains the bidi control U+061C at character 5"},
		{"refused/zero-width-space", "Line\u200b3", "contains the invisible character U+200B at character 5"},
		{"refused/zero-width-joiner", "Line\u200d3", "contains the invisible character U+200D at character 5"},
		{"refused/word-joiner", "Li\u2060ne", "contains the invisible character U+2060 at character 3"},
		{"refused/byte-order-mark", "\ufeffLine", "contains the invisible character U+FEFF at character 1"},
		{"refused/soft-hyphen", "Li\u00adne", "contains the invisible character U+00AD at character 3"},
		{"refused/tag-character", "Line\U000e0041", "contains the invisible character U+E0041 at character 5"},
		{"refused/line-separator", "Line\u2028Two", "contains the invisible character U+2028 at character 5"},
		// Default-ignorable characters outside Cf: "Line\u31643" shows as "Line 3", and a
		// variation selector after a letter shows as nothing at all.
		{"refused/hangul-filler", "Line\u31643", "contains the invisible character U+3164 at character 5"},
		{"refused/hangul-choseong-filler", "Line\u115f3", "contains the invisible character U+115F at character 5"},
		{"refused/halfwidth-hangul-filler", "Line\uffa03", "contains the invisible character U+FFA0 at character 5"},
		{"refused/combining-grapheme-joiner", "Li\u034fne", "contains the invisible character U+034F at character 3"},
		{"refused/variation-selector-after-a-letter", "Line\ufe0f", "contains the invisible character U+FE0F at character 5"},
		{"refused/variation-selector-first", "\ufe0eLine", "contains the invisible character U+FE0E at character 1"},
		{"refused/variation-selector-after-a-selector", "Hot\u2668\ufe0f\ufe0f", "contains the invisible character U+FE0F at character 6"},
		{"ok/keycap", "Line 1\ufe0f\u20e3", ""},
		{"ok/ideographic-variation-sequence", "\u845b\U000e0100\u98fe", ""},
	}
	for use, give := range uses {
		for _, tt := range tests {
			t.Run(use+"/"+tt.name, func(t *testing.T) {
				err := give(tt.value)
				if tt.says == "" {
					if err != nil {
						t.Errorf("%q refused: %v", tt.value, err)
					}
					return
				}
				if devreg.ErrorCode(err) != devreg.EINVALID || !strings.Contains(devreg.ErrorMessage(err), tt.says) {
					t.Errorf("%q: %v; want %s saying %q", tt.value, err, devreg.EINVALID, tt.says)
				}
			})
		}
	}

	t.Run("description", func(t *testing.T) {
		_, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: "described", Description: "made in \u202eanihc"})
		if devreg.ErrorCode(err) != devreg.EINVALID || !strings.Contains(devreg.ErrorMessage(err), "description contains the bidi control U+202E at character 9") {
			t.Errorf("description with a bidi override: %v", err)
		}
		// Free text may need a joiner (emoji sequences, Persian): only bidi controls are refused.
		if _, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: "described", Description: "for the \U0001f469\u200d\U0001f527 on site"}); err != nil {
			t.Errorf("description with a zero-width joiner: %v", err)
		}
	})

	t.Run("uploaded-file-name", func(t *testing.T) {
		for in, want := range map[string]string{
			"lot-7\u202evsc.exe": "lot-7vsc.exe",
			"lot\u200b-7.csv":    "lot-7.csv",
			"\ufefflot-7.csv":    "lot-7.csv",
			"lot-7 (Zürich).csv": "lot-7 (Zürich).csv",
			"lot\u3164-7.csv":    "lot-7.csv",
			"lot-7\ufe0f.csv":    "lot-7.csv",
		} {
			if got := registry.CleanFilename(in); got != want {
				t.Errorf("CleanFilename(%+q) = %+q, want %+q", in, got, want)
			}
		}
	})
}
