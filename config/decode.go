package config

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// decodeInto converts raw — a TOML value, an environment string, a flag
// value or a default — into the field dst points to, strictly: a string
// where a number belongs is parsed, but "yes" is not a bool and 3.5 is not
// an int.
func decodeInto(k *keySpec, raw any, dst any) error {
	switch k.kind {
	case kindString:
		s, err := asString(raw)
		if err != nil {
			return err
		}
		*dst.(*string) = s
	case kindBool:
		b, err := asBool(raw)
		if err != nil {
			return err
		}
		*dst.(*bool) = b
	case kindInt:
		n, err := asInt(raw)
		if err != nil {
			return err
		}
		*dst.(*int) = n
	case kindDuration:
		d, err := asDuration(raw)
		if err != nil {
			return err
		}
		*dst.(*time.Duration) = d
	case kindSize, kindRate:
		n, err := asSize(raw, k.kind == kindRate)
		if err != nil {
			return err
		}
		*dst.(*int64) = n
	case kindList:
		l, err := asList(raw)
		if err != nil {
			return err
		}
		*dst.(*[]string) = l
	case kindOverrides:
		o, err := asOverrides(raw)
		if err != nil {
			return err
		}
		*dst.(*[]TrustOverride) = o
	default:
		return fmt.Errorf("unhandled kind %v", k.kind)
	}
	return nil
}

func typeErr(want string, raw any) error {
	return invalid("want %s, got %s", want, describe(raw))
}

func describe(raw any) string {
	switch r := raw.(type) {
	case string:
		return strconv.Quote(r)
	case nil:
		return "nothing"
	default:
		return fmt.Sprintf("%v (%T)", r, r)
	}
}

func asString(raw any) (string, error) {
	switch r := raw.(type) {
	case string:
		return r, nil
	case nil:
		return "", nil
	default:
		return "", typeErr("a string", raw)
	}
}

func asBool(raw any) (bool, error) {
	switch r := raw.(type) {
	case bool:
		return r, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(r)) {
		case "true", "1":
			return true, nil
		case "false", "0":
			return false, nil
		}
	}
	return false, typeErr("true or false", raw)
}

func asInt(raw any) (int, error) {
	switch r := raw.(type) {
	case int:
		return r, nil
	case int64:
		if r < math.MinInt || r > math.MaxInt {
			return 0, typeErr("an integer", raw)
		}
		return int(r), nil
	case float64:
		if r == math.Trunc(r) && math.Abs(r) < 1<<53 {
			return int(r), nil
		}
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err == nil {
			return n, nil
		}
	}
	return 0, typeErr("an integer", raw)
}

func asDuration(raw any) (time.Duration, error) {
	switch r := raw.(type) {
	case time.Duration:
		return r, nil
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(r))
		if err == nil {
			return d, nil
		}
		return 0, invalid("want a duration like \"22h\" or \"90m\", got %q", r)
	}
	return 0, typeErr(`a duration string like "22h"`, raw)
}

func asSize(raw any, rate bool) (int64, error) {
	switch r := raw.(type) {
	case int64:
		return r, nil
	case int:
		return int64(r), nil
	case float64:
		if r == math.Trunc(r) && math.Abs(r) < 1<<53 {
			return int64(r), nil
		}
	case string:
		if rate {
			return ParseRate(r)
		}
		return ParseSize(r)
	}
	return 0, typeErr(`a size like "10GiB" or a number of bytes`, raw)
}

// asList accepts a TOML array of strings, or — from the environment or a
// flag — one string of items separated by commas or white space (no
// multiaddr, peer ID or key contains either).
func asList(raw any) ([]string, error) {
	switch r := raw.(type) {
	case nil:
		return []string{}, nil
	case []string:
		return splitItems(r), nil
	case string:
		return splitItems([]string{r}), nil
	case []any:
		out := make([]string, 0, len(r))
		for i, e := range r {
			s, ok := e.(string)
			if !ok {
				return nil, invalid("item %d: want a string, got %s", i, describe(e))
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, typeErr("a list of strings", raw)
}

func splitItems(in []string) []string {
	out := []string{}
	for _, s := range in {
		out = append(out, strings.FieldsFunc(s, func(r rune) bool {
			return r == ',' || r == ' ' || r == '\t' || r == '\n'
		})...)
	}
	return out
}

var overrideFields = []string{"glob", "threshold", "dispute", "require_signer"}

func asOverrides(raw any) ([]TrustOverride, error) {
	var items []any
	switch r := raw.(type) {
	case nil:
		return nil, nil
	case []any:
		items = r
	case []map[string]any:
		for _, m := range r {
			items = append(items, m)
		}
	default:
		return nil, typeErr("[[trust.overrides]] tables", raw)
	}
	if len(items) == 0 {
		return nil, nil
	}
	out := make([]TrustOverride, 0, len(items))
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, invalid("item %d: want a table, got %s", i, describe(it))
		}
		var o TrustOverride
		names := make([]string, 0, len(m))
		for name := range m {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			val := m[name]
			var err error
			switch strings.ToLower(name) {
			case "glob":
				o.Glob, err = asString(val)
			case "threshold":
				var n int
				n, err = asInt(val)
				o.Threshold = &n
			case "dispute":
				var n int
				n, err = asInt(val)
				o.Dispute = &n
			case "require_signer":
				var b bool
				b, err = asBool(val)
				o.RequireSigner = &b
			default:
				err = fmt.Errorf("%w %q (want one of %s)", ErrUnknownKey, name, strings.Join(overrideFields, ", "))
			}
			if err != nil {
				return nil, fmt.Errorf("[%d].%s: %w", i, name, err)
			}
		}
		out = append(out, o)
	}
	return out, nil
}
