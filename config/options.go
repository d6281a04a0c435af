package config

import (
	"slices"
	"time"
)

// option is one option of the global block or of a block inside a
// directive (consul { ... }, register { ... }), as routeDir is one
// directive of a route: its usage,
// which errors show and which gives its argument count, and its parser,
// which runs only when the count is right and (unless repeat) the option
// is not given twice. The table is the list of names: unknown ones are
// answered with the closest of them.
type option[T any] struct {
	usage    string
	min, max int  // argument count; max -1: any
	repeat   bool // may be given more than once
	block    bool // takes a block of its own
	parse    func(p *parser, dst T, d directive)
}

// options applies the block of d to dst, option by option, from table;
// where names the block in errors ("consul", "register").
func options[T any](p *parser, d directive, where string, table map[string]option[T], dst T) {
	seen := map[string]Pos{}
	blk := d.block
	for nesting := blk.Nesting(); d.hasBlock && blk.NextBlock(nesting); {
		sub := splitDirective(blk.NextSegment())
		o, ok := table[sub.name.Text]
		if !o.block {
			p.noBlock(sub)
		}
		if !ok {
			p.errorf(sub.pos(), "%s", unknownName("option", sub.name.Text, " in "+where, sortedNames(table)))
			continue
		}
		if (o.repeat || p.once(seen, sub)) && p.argCount(sub, o.usage, o.min, o.max) {
			o.parse(p, dst, sub)
		}
	}
}

// sortedNames lists a table's names, sorted, for did-you-mean.
func sortedNames[V any](table map[string]V) []string {
	names := make([]string, 0, len(table))
	for name := range table {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// stringOption is an option of one argument stored as it is.
func stringOption[T any](usage string, field func(T) *string) option[T] {
	return option[T]{usage: usage, min: 1, max: 1, parse: func(_ *parser, dst T, d directive) {
		*field(dst) = d.args[0].Text
	}}
}

// durationOption is an option of one duration.
func durationOption[T any](usage string, field func(T) *time.Duration) option[T] {
	return option[T]{usage: usage, min: 1, max: 1, parse: func(p *parser, dst T, d directive) {
		p.duration(d, field(dst))
	}}
}

// flagOption is an option of no argument that sets a flag.
func flagOption[T any](name string, field func(T) *bool) option[T] {
	return option[T]{usage: name, parse: func(_ *parser, dst T, _ directive) {
		*field(dst) = true
	}}
}
