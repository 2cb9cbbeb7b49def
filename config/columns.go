package config

import "slices"

// columnsShape says how a table's column selection is written.
const columnsShape = "write {exclude: [password_hash]} to leave columns out, or {include: [id, email]} to send only those"

// columns returns the column selection per table, written as
// {table: {include: [...]}} or {table: {exclude: [...]}}. Tables must be in
// scope; columns are taken as written, since they name keys of the record.
func (d *decoder) columns(v value, scope []Table, scopeName string) map[Table]Columns {
	entries := d.entries(v)
	if len(entries) == 0 {
		return nil
	}
	out := make(map[Table]Columns, len(entries))
	seen := make(map[Table]bool, len(entries))
	for _, e := range entries {
		t, err := ParseTable(e.key)
		if err != nil {
			d.fail(e.value, "%v; %s", err, tableHint)
			continue
		}
		if seen[t] {
			d.fail(e.value, "%s is listed twice; keep one", t)
			continue
		}
		seen[t] = true
		d.checkInScope(e.value, t, scope, scopeName)
		o := d.object(e.value, "include", "exclude")
		include, exclude := o.field("include"), o.field("exclude")
		switch {
		case include.present() && exclude.present():
			d.fail(e.value, "both include and exclude; keep one: %s", columnsShape)
		case include.present():
			out[t] = Columns{Include: d.columnNames(include, t)}
		case exclude.present():
			out[t] = Columns{Exclude: d.columnNames(exclude, t)}
		case !e.value.present() || len(e.value.node.fields) == 0:
			d.fail(e.value, "neither include nor exclude; %s", columnsShape)
		}
		// Otherwise the mapping has only unknown keys, reported as such.
	}
	return out
}

// columnNames returns the column names of a list, which must name at least
// one and none twice.
func (d *decoder) columnNames(v value, t Table) []string {
	var names []string
	items := d.list(v)
	for _, item := range items {
		name := d.string(item, "")
		switch {
		case name == "":
			d.fail(item, "empty column name; write a column of %s", t)
		case slices.Contains(names, name):
			d.fail(item, "%s is listed twice; remove one", name)
		default:
			names = append(names, name)
		}
	}
	d.check(v, len(items) > 0, "no columns; list at least one, or remove %s from columns", t)
	return names
}

// sourceColumns returns source.columns, which needs source.tables to name
// the tables: a publication FOR ALL TABLES cannot have column lists, so
// the columns would leave PostgreSQL after all.
func (d *decoder) sourceColumns(v value, tables []Table) map[Table]Columns {
	if len(tables) == 0 && v.present() {
		d.fail(v, "needs source.tables to list the tables: a publication FOR ALL TABLES cannot have column lists, "+
			"so the columns would still leave PostgreSQL; list the tables in source.tables, "+
			"or use sinks[].columns, which leaves columns out in walhook")
		return nil
	}
	return d.columns(v, tables, "source.tables")
}

// checkGroupByColumns refuses a group_by column that the sink's columns or
// source.columns leave out: a sink orders a table's messages by the values
// its records carry, so the column must be delivered.
func (d *decoder) checkGroupByColumns(groupBy value, s Sink, src Source) {
	for _, e := range d.entries(groupBy) {
		t, err := ParseTable(e.key)
		if err != nil {
			continue // reported by groupBy
		}
		for _, c := range s.GroupBy[t] {
			var by string
			switch {
			case !keeps(src.Columns, t, c):
				by = "source.columns"
			case !keeps(s.Columns, t, c):
				by = "columns"
			default:
				continue
			}
			d.fail(e.value, "%s is left out by %s, but the sink orders %s by it, and a record without it cannot be ordered; "+
				"deliver %s (remove it from exclude, or add it to include), or group by columns the sink receives", c, by, t, c)
			break
		}
	}
}

// keeps reports whether selection lets column c of t through.
func keeps(selection map[Table]Columns, t Table, c string) bool {
	sel, ok := selection[t]
	return !ok || sel.Keeps(c)
}
