package config

import (
	"slices"
	"strings"
)

// events reads the events section: where walhook's operational events go.
// Absent, events are off.
func (d *decoder) events(v value) Events {
	o := d.object(v, "url", "secret", "types")
	if !v.present() {
		return Events{}
	}
	e := Events{
		URL:     d.httpURL(o.field("url")),
		Secrets: d.secrets(o.field("secret")),
	}
	for _, item := range d.list(o.field("types")) {
		t := d.string(item, "")
		switch {
		case !slices.Contains(EventTypes, t):
			d.fail(item, "%q is not an event type; use %s", t, strings.Join(EventTypes, ", "))
		case slices.Contains(e.Types, t):
			d.fail(item, "%s is listed twice; remove one", t)
		default:
			e.Types = append(e.Types, t)
		}
	}
	return e
}
