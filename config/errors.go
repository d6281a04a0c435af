package config

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem found in a config file, with the place it was found.
type Error struct {
	Pos Pos
	Msg string
}

// Error formats the error as "file:line: message". Without a line it is
// "file: message", and without a file just the message.
func (e *Error) Error() string {
	switch {
	case e.Pos.Line > 0:
		return e.Pos.String() + ": " + e.Msg
	case e.Pos.File != "":
		return e.Pos.File + ": " + e.Msg
	default:
		return e.Msg
	}
}

// ErrorList is every problem Parse found in one config, in file order. Parse
// returns a non-empty ErrorList or a nil error, never an empty list.
type ErrorList []*Error

// Error returns one line per error.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the errors of the list, for errors.Is and errors.As.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// sortErrors orders errors by place: the main file first, then any imported
// files by name, each by line. The sort is stable, so errors found on one
// line stay in the order they were found.
func sortErrors(l ErrorList, mainFile string) {
	slices.SortStableFunc(l, func(a, b *Error) int {
		aOther, bOther := a.Pos.File != mainFile, b.Pos.File != mainFile
		if aOther != bOther {
			if aOther {
				return 1
			}
			return -1
		}
		return cmp.Or(strings.Compare(a.Pos.File, b.Pos.File), cmp.Compare(a.Pos.Line, b.Pos.Line))
	})
}

var (
	// caddyfile's errors end in ", at FILE:LINE", optionally followed by an
	// import chain.
	caddyAtRe = regexp.MustCompile(`(?s)^(.*), at (.+):(\d+)(?: import chain:? \[(.*)\])?$`)
	// its lexer's errors mention "line #N" and no file.
	caddyLineRe = regexp.MustCompile(`line #(\d+)`)
)

// fromCaddyfileError turns an error of caddyfile.Parse into an Error with
// the file and line it names, when it names one.
func fromCaddyfileError(filename string, err error) *Error {
	msg := err.Error()
	if m := caddyAtRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[3])
		text := m[1]
		if chain := strings.Trim(m[4], "'"); chain != "" {
			text += " (imported via " + strings.ReplaceAll(chain, "','", ", ") + ")"
		}
		return &Error{Pos: Pos{File: m[2], Line: line}, Msg: text}
	}
	if m := caddyLineRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Pos: Pos{File: filename, Line: line}, Msg: msg}
	}
	return &Error{Pos: Pos{File: filename}, Msg: msg}
}

// unknownName is the message for a name that is not one of known: what
// it is and where ("directive", "in route"), the closest known name if
// one is near enough to be a typo, and the known names.
func unknownName(what, name, where string, known []string) string {
	msg := fmt.Sprintf("unknown %s %q%s", what, name, where)
	if c := closest(name, known); c != "" {
		return msg + fmt.Sprintf("; did you mean %q? (known: %s)", c, strings.Join(known, ", "))
	}
	return msg + "; known: " + strings.Join(known, ", ")
}

// closest returns the name of known nearest to name by edit distance, if
// it is at most a third of name's length (at least 2) away; "" otherwise.
func closest(name string, known []string) string {
	best, bestD := "", max(2, len(name)/3)+1
	for _, k := range known {
		if d := editDistance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
