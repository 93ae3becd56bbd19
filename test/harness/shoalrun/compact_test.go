package shoalrun

import "testing"

func TestCompact(t *testing.T) {
	in := `=== 2026-12-03T12:11:39.628797928Z start in ns: ["shoal" "agent"]
{"level":"info","node":"node1","component":"multihost","ip":"192.0.2.50","time":"2026-12-03T12:11:39.776003842Z","message":"removed leftover address from lo"}
{"level":"debug","node":"node1","time":"2026-12-03T12:11:39.8Z","message":"noise"}
{"level":"warn","node":"node1","component":"dataplane","op":"multi","attempt":1,"error":"boom","time":"2026-12-03T12:11:40.1Z","message":"dataplane operation failed"}
not json
`
	want := `=== 2026-12-03T12:11:39.628797928Z start in ns: ["shoal" "agent"]
12:11:39.776 I multihost removed leftover address from lo ip=192.0.2.50
12:11:40.100 W dataplane dataplane operation failed attempt=1 error=boom op=multi
not json
`
	if got := Compact(in); got != want {
		t.Errorf("Compact:\n%s\nwant:\n%s", got, want)
	}
}
