// Package e2e holds the examples' end-to-end test: headless Chromium,
// driven over the DevTools protocol, chatting through wsproxy over wss://
// with chat backends that are real processes, one of which is killed
// mid-conversation. See chromium_test.go; it needs Debian's chromium
// package (scripts/test.sh installs it).
package e2e
