package main

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/redact"
	"github.com/walhook/walhook/server"
)

// sinkSettings is a sink's configuration as the console shows it: one
// setting per key, written as in the YAML file (batch_size, retry.initial),
// every secret masked. It walks the loaded config.Sink, so a key that a
// sink type adds shows without a change here. A key whose name says it is
// a secret (secret, password, token, passphrase) is masked whole, and
// every value goes through the configuration's redactor, which knows the
// passwords in URLs and the header values.
func sinkSettings(sc config.Sink, r *redact.Redactor) []server.Setting {
	var out []server.Setting
	walkSettings(reflect.ValueOf(sc), "", func(key, value string) {
		if key == "name" {
			return
		}
		if sensitiveKey(key) && value != "" {
			value = redact.Mask
		}
		out = append(out, server.Setting{Key: key, Value: r.String(value)})
	})
	return out
}

// sensitiveKey reports whether a key names a secret.
func sensitiveKey(key string) bool {
	key = strings.ToLower(key)
	for _, s := range []string{"secret", "password", "token", "passphrase"} {
		if strings.Contains(key, s) {
			return true
		}
	}
	return false
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	tableType    = reflect.TypeFor[config.Table]()
	originType   = reflect.TypeFor[config.Origin]()
	sinkType     = reflect.TypeFor[config.Sink]()
)

// typeParts are config.Sink's fields that hold one type's keys, by the
// type: only the sink's own is shown, with its keys as written in YAML
// (url, not webhook.url).
var typeParts = map[string]string{
	"Webhook": "webhook", "NATS": "nats", "Kafka": "kafka", "Redis": "redis", "RabbitMQ": "rabbitmq",
}

// walkSettings calls emit for every leaf of v under prefix.
func walkSettings(v reflect.Value, prefix string, emit func(key, value string)) {
	switch {
	case v.Type() == originType:
		return
	case v.Type() == durationType:
		emit(prefix, time.Duration(v.Int()).String())
		return
	case v.Type() == tableType:
		emit(prefix, v.Interface().(config.Table).String())
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			if typ, ok := typeParts[f.Name]; ok && v.Type() == sinkType {
				if typ == v.Interface().(config.Sink).Type {
					walkSettings(v.Field(i), prefix, emit)
				}
				continue
			}
			walkSettings(v.Field(i), join(prefix, snake(f.Name)), emit)
		}
	case reflect.Map:
		keys := v.MapKeys()
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = fmt.Sprint(k.Interface())
		}
		order := make([]int, len(keys))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int { return strings.Compare(names[a], names[b]) })
		for _, i := range order {
			walkSettings(v.MapIndex(keys[i]), prefix+"["+names[i]+"]", emit)
		}
	case reflect.Slice, reflect.Array:
		if v.Len() == 0 {
			emit(prefix, "")
			return
		}
		if sensitiveKey(prefix) {
			for i := range v.Len() {
				emit(fmt.Sprintf("%s[%d]", prefix, i), fmt.Sprint(v.Index(i).Interface()))
			}
			return
		}
		parts := make([]string, 0, v.Len())
		for i := range v.Len() {
			walkSettings(v.Index(i), "", func(_, value string) { parts = append(parts, value) })
		}
		emit(prefix, strings.Join(parts, ", "))
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			walkSettings(v.Elem(), prefix, emit)
		}
	case reflect.Bool:
		emit(prefix, strconv.FormatBool(v.Bool()))
	default:
		emit(prefix, fmt.Sprint(v.Interface()))
	}
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// snake writes a Go field name as a YAML key: MaxInFlight is
// max_in_flight, URL url, CAFile ca_file.
func snake(name string) string {
	var b strings.Builder
	rs := []rune(name)
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 && (unicode.IsLower(rs[i-1]) || (i+1 < len(rs) && unicode.IsLower(rs[i+1]))) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
