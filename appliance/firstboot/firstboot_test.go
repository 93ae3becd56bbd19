package firstboot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeRunner records commands; "mount" copies a fixture directory into the
// mount point so seed drives can be tested without root.
type fakeRunner struct {
	mu     sync.Mutex
	calls  []string
	mounts map[string]string // device -> fixture directory
	fail   map[string]error  // program -> error
}

func (f *fakeRunner) Run(_ context.Context, stdin, name string, args ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	call := strings.Join(append([]string{name}, args...), " ")
	if stdin != "" {
		call += " <<" + strings.TrimSpace(stdin)
	}
	f.calls = append(f.calls, call)
	if err := f.fail[name]; err != nil {
		return err
	}
	if name == "mount" {
		dev, dir := args[len(args)-2], args[len(args)-1]
		src, ok := f.mounts[dev]
		if !ok {
			return errors.New("mount: wrong fs type")
		}
		return copyDir(src, dir)
	}
	if name == "umount" {
		entries, _ := os.ReadDir(args[0])
		for _, e := range entries {
			_ = os.RemoveAll(filepath.Join(args[0], e.Name()))
		}
	}
	return nil
}

func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

type fakeCluster struct {
	found []string
	reqs  []string
	err   error
}

func (c *fakeCluster) Init(_ context.Context, r ClusterRequest) error {
	c.reqs = append(c.reqs, "init "+describe(r))
	return c.err
}

func (c *fakeCluster) Discover(_ context.Context, iface string) ([]string, error) {
	c.reqs = append(c.reqs, "discover "+iface)
	return c.found, nil
}

func (c *fakeCluster) Join(_ context.Context, r ClusterRequest) error {
	c.reqs = append(c.reqs, "join "+describe(r))
	return c.err
}

func describe(r ClusterRequest) string {
	return strings.Join([]string{r.Name, r.Password, r.Node, r.Interface, r.Address, filepath.Base(r.Dir), filepath.Base(r.DataDir)}, "|") + map[bool]string{true: "|unattended", false: ""}[r.Unattended]
}

// newSystem makes a root with /etc, a fake sysfs with the given NICs
// (name, mac, ifindex; "lo" and a bridge without device are added) and
// the image's autologin drop-ins.
func newSystem(t *testing.T, nics ...NIC) (*System, *fakeRunner, *fakeCluster) {
	t.Helper()
	root := t.TempDir()
	mk := func(p, content string) {
		t.Helper()
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\told\n::1\tlocalhost ip6-localhost\n")
	mk("etc/machine-id", "uninitialized\n")
	mk(autologinSerial, "[Service]\n")
	mk(autologinTTY, "[Service]\n")
	mk("etc/ssh/sshd_config", "")
	net := filepath.Join(root, "sys/class/net")
	add := func(n NIC, device bool, typ string) {
		mk(filepath.Join("sys/class/net", n.Name, "address"), n.MAC+"\n")
		mk(filepath.Join("sys/class/net", n.Name, "ifindex"), strconv.Itoa(n.Index)+"\n")
		mk(filepath.Join("sys/class/net", n.Name, "type"), typ+"\n")
		if device {
			mk(filepath.Join("sys/class/net", n.Name, "device/vendor"), "0x1af4\n")
		}
	}
	add(NIC{Name: "lo", MAC: "00:00:00:00:00:00", Index: 1}, false, "772")
	add(NIC{Name: "br0", MAC: "02:00:00:00:00:01", Index: 2}, false, "1")
	for _, n := range nics {
		add(n, true, "1")
	}
	r := &fakeRunner{mounts: map[string]string{}, fail: map[string]error{}}
	c := &fakeCluster{}
	return &System{Root: root, SysClassNet: net, Run: r, Cluster: c, NICWait: 1}, r, c
}

func read(t *testing.T, s *System, p string) string {
	t.Helper()
	b, err := os.ReadFile(s.path(p))
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

var (
	nicA = NIC{Name: "ens3", MAC: "52:54:00:12:34:56", Index: 3}
	nicB = NIC{Name: "eth1", MAC: "52:54:00:ab:cd:ef", Index: 4}
)

func TestFirstBootDefaults(t *testing.T) {
	// NIC order on disk differs from ifindex order: the lowest ifindex wins.
	s, run, cluster := newSystem(t, nicB, nicA)
	r, err := s.FirstBoot(context.Background(), Seed{})
	if err != nil {
		t.Fatalf("FirstBoot: %v", err)
	}
	if r.Hostname != "shoal-123456" || r.NIC.Name != "ens3" {
		t.Errorf("FirstBoot = host %q nic %q, want shoal-123456 on ens3", r.Hostname, r.NIC.Name)
	}
	wantNet := "# Written by 'shoal setup'; run it again to change.\n[Match]\nMACAddress=52:54:00:12:34:56\n\n[Network]\nDHCP=yes\nIPv6AcceptRA=yes\n"
	if diff := cmp.Diff(wantNet, read(t, s, NetworkFile)); diff != "" {
		t.Errorf("network file (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff("127.0.0.1\tlocalhost\n127.0.1.1\tshoal-123456\n::1\tlocalhost ip6-localhost\n", read(t, s, "etc/hosts")); diff != "" {
		t.Errorf("hosts (-want +got):\n%s", diff)
	}
	id := strings.TrimSpace(read(t, s, "etc/machine-id"))
	if len(id) != 32 || !isHex(id) || id[12] != '4' {
		t.Errorf("machine-id = %q, want 32 hex digits, UUID v4", id)
	}
	if diff := cmp.Diff([]string{"ssh-keygen -A -f " + s.Root}, run.calls); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	if len(cluster.reqs) != 0 {
		t.Errorf("cluster calls without a seed: %v", cluster.reqs)
	}
	if _, err := os.Stat(s.path(FirstBootStamp)); err != nil {
		t.Errorf("first boot stamp: %v", err)
	}
	// no access configured: the console autologin must stay
	if _, err := os.Stat(s.path(autologinSerial)); err != nil {
		t.Errorf("autologin removed without any other way in: %v", err)
	}
}

func TestFirstBootKeepsExistingIdentity(t *testing.T) {
	s, run, _ := newSystem(t, nicA)
	const id = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(s.path("etc/machine-id"), []byte(id+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path("etc/ssh/ssh_host_ed25519_key"), []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FirstBoot(context.Background(), Seed{}); err != nil {
		t.Fatalf("FirstBoot: %v", err)
	}
	if got := strings.TrimSpace(read(t, s, "etc/machine-id")); got != id {
		t.Errorf("machine-id = %q, want the existing %q", got, id)
	}
	if len(run.calls) != 0 {
		t.Errorf("commands run although keys exist: %v", run.calls)
	}
}

func TestApplyFullSeed(t *testing.T) {
	s, run, cluster := newSystem(t, nicA, nicB)
	data, err := os.ReadFile("testdata/seed-full.toml")
	if err != nil {
		t.Fatal(err)
	}
	seed, err := ParseSeed("seed-full.toml", data)
	if err != nil {
		t.Fatalf("ParseSeed: %v", err)
	}
	r, err := s.Apply(context.Background(), seed, true)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if r.Cluster != "prod" || r.NIC.Name != "eth1" {
		t.Errorf("Apply = %+v, want cluster prod on eth1", r)
	}
	wantNet := "# Written by 'shoal setup'; run it again to change.\n[Match]\nMACAddress=52:54:00:ab:cd:ef\n\n[Network]\nDHCP=no\nIPv6AcceptRA=no\n" +
		"Address=192.0.2.10/24\nAddress=2001:db8::10/64\nGateway=192.0.2.1\nDNS=192.0.2.53\n"
	if diff := cmp.Diff(wantNet, read(t, s, NetworkFile)); diff != "" {
		t.Errorf("network file (-want +got):\n%s", diff)
	}
	if got := read(t, s, "etc/hosts"); !strings.Contains(got, "127.0.1.1\tshoal-a.example.org shoal-a\n") {
		t.Errorf("hosts = %q, want the FQDN and short name on 127.0.1.1", got)
	}
	wantCalls := []string{
		"chpasswd -e -R " + s.Root + " <<root:$y$j9T$abc$def",
		"systemctl --root=" + s.Root + " enable ssh.service",
	}
	if diff := cmp.Diff(wantCalls, run.calls); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	if got := read(t, s, AuthorizedKeys); got != seed.Access.SSHAuthorizedKeys[0]+"\n" {
		t.Errorf("authorized_keys = %q", got)
	}
	if diff := cmp.Diff([]string{"init prod|correct horse battery staple|shoal-a|eth1|192.0.2.10|shoal|shoal|unattended"}, cluster.reqs); diff != "" {
		t.Errorf("cluster calls (-want +got):\n%s", diff)
	}
	for _, p := range []string{autologinSerial, autologinTTY} {
		if _, err := os.Stat(s.path(p)); !os.IsNotExist(err) {
			t.Errorf("%s still present after access was configured", p)
		}
	}
}

func TestApplyJoinDiscovers(t *testing.T) {
	tests := []struct {
		name    string
		found   []string
		wantErr bool
		want    []string
	}{
		{"one cluster", []string{"prod"}, false, []string{"discover ens3", "join prod|pw|shoal-123456|ens3||shoal|shoal"}},
		{"two clusters", []string{"prod", "test"}, true, []string{"discover ens3"}},
		{"none", nil, true, []string{"discover ens3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _, cluster := newSystem(t, nicA)
			cluster.found = tc.found
			_, err := s.Apply(context.Background(), Seed{Cluster: Cluster{Action: "join", Password: "pw"}}, false)
			if (err != nil) != tc.wantErr {
				t.Errorf("Apply error = %v, want error %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, cluster.reqs); diff != "" {
				t.Errorf("cluster calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyWithoutClusterCommands(t *testing.T) {
	s, _, _ := newSystem(t, nicA)
	s.Cluster = nil
	_, err := s.Apply(context.Background(), Seed{Cluster: Cluster{Action: "init", Name: "x", Password: "p"}}, true)
	if !errors.Is(err, ErrNoCluster) {
		t.Errorf("Apply error = %v, want ErrNoCluster", err)
	}
	// the host-local part is still done
	if got := read(t, s, "etc/hostname"); got != "shoal-123456\n" {
		t.Errorf("hostname = %q", got)
	}
}

func TestNoNIC(t *testing.T) {
	s, _, _ := newSystem(t)
	if _, err := s.FirstBoot(context.Background(), Seed{}); err == nil || !strings.Contains(err.Error(), "no physical Ethernet interface") {
		t.Errorf("FirstBoot without NIC: error %v", err)
	}
	if _, err := os.Stat(s.path(FirstBootStamp)); !os.IsNotExist(err) {
		t.Errorf("stamp written although first boot failed")
	}
}

func TestFindSeed(t *testing.T) {
	fixture := t.TempDir()
	nocloud := t.TempDir()
	if err := os.WriteFile(filepath.Join(fixture, SeedFile), []byte("hostname = \"from-drive\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nocloud, "meta-data"), []byte("instance-id: i-1\nlocal-hostname: from-nocloud\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		devices  map[string]string // label path -> fixture
		local    string
		want     string
		wantErr  bool
		notFound bool
	}{
		{name: "none", notFound: true},
		{name: "CIDATA drive", devices: map[string]string{"by-label/CIDATA": fixture}, want: "from-drive"},
		{name: "plain NoCloud meta-data", devices: map[string]string{"by-label/cidata": nocloud}, want: "from-nocloud"},
		{name: "ESP after an unmountable drive", devices: map[string]string{"by-label/SHOALSEED": "", "by-partlabel/esp": fixture}, want: "from-drive"},
		{name: "local file wins", devices: map[string]string{"by-label/CIDATA": fixture}, local: "hostname = \"local\"\n", want: "local"},
		{name: "bad local file", local: "hostname = \"Bad_Name\"\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, run, _ := newSystem(t, nicA)
			for l, fix := range tc.devices {
				dev := s.path(filepath.Join("dev/disk", l))
				if err := os.MkdirAll(filepath.Dir(dev), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(dev, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if fix != "" {
					run.mounts[dev] = fix
				}
			}
			if tc.local != "" {
				if err := os.MkdirAll(s.path("etc/shoal"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(s.path(LocalSeedPath), []byte(tc.local), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			seed, _, found, err := s.FindSeed(context.Background())
			if (err != nil) != tc.wantErr {
				t.Fatalf("FindSeed error = %v, want error %v", err, tc.wantErr)
			}
			if found == tc.notFound && !tc.wantErr {
				t.Errorf("FindSeed found = %v", found)
			}
			if seed.Hostname != tc.want {
				t.Errorf("FindSeed hostname = %q, want %q", seed.Hostname, tc.want)
			}
			// every mount was undone and its directory removed
			left, _ := filepath.Glob(s.path("run/shoal-seed-*"))
			if len(left) != 0 {
				t.Errorf("mount points left behind: %v", left)
			}
		})
	}
}
