package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v4"
)

// applyConfigFile reads --config FILE (or DEVREG_CONFIG) from args and sets fs's flags from it,
// before the command line is parsed: a YAML mapping whose keys are the flags' names
// (addr: ..., public-url: ..., metrics-listen: ...). The precedence is command line, then
// environment, then the file, then the defaults: a key whose DEVREG_ variable is set is left to
// the variable, and a flag given on the command line replaces the file's value when parsed.
// A key that is no flag of the command is refused with its name, so that a misspelt setting is
// not silently ignored. It returns args without --config.
func (m *Main) applyConfigFile(fs *flag.FlagSet, args []string) ([]string, error) {
	path := m.Getenv("DEVREG_CONFIG")
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			rest = append(rest, a)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, usageError{"--config needs a FILE"}
			}
			i++
			value = args[i]
		}
		path = value
	}
	if path == "" {
		return rest, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError{fmt.Sprintf("--config: cannot read the config file: %v", err)}
	}
	var settings map[string]any
	if err := yaml.Unmarshal(raw, &settings); err != nil {
		return nil, usageError{fmt.Sprintf("--config %s is not a YAML mapping of flag names to values: %v", path, err)}
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return nil, usageError{fmt.Sprintf("--config %s: unknown key %q; the keys are the flags of devreg %s (see -h), such as addr or public-url", path, k, fs.Name())}
		}
		if m.Getenv(envName(k)) != "" {
			continue // the environment overrides the file
		}
		var value string
		switch v := settings[k].(type) {
		case nil:
			continue
		case []any:
			parts := make([]string, len(v))
			for i, p := range v {
				parts[i] = fmt.Sprint(p)
			}
			value = strings.Join(parts, ",")
		case map[string]any:
			return nil, usageError{fmt.Sprintf("--config %s: %s takes a value, not a mapping", path, k)}
		default:
			value = fmt.Sprint(v)
		}
		if err := fs.Set(k, value); err != nil {
			return nil, usageError{fmt.Sprintf("--config %s: %s: %v", path, k, err)}
		}
	}
	return rest, nil
}

// envName is the environment variable of a flag: DEVREG_ and its name in capitals, - as _.
func envName(flagName string) string {
	return "DEVREG_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}
