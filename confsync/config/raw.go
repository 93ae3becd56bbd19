package config

// The raw types mirror the TOML files exactly. Pointers mark optional keys
// whose default is not the zero value, so an explicit zero is kept.

type rawCluster struct {
	Cluster  rawSettings   `toml:"cluster"`
	Member   []rawMember   `toml:"member"`
	Group    []rawGroup    `toml:"group"`
	SelfTest *rawSelfTest  `toml:"selftest"`
	Events   *rawEvents    `toml:"events"`
	Admin    *rawAdmin     `toml:"admin"`
	Observer []rawObserver `toml:"observer"`
}

type rawObserver struct {
	Name    string `toml:"name"`
	Address string `toml:"address,omitempty"`
}

type rawAdmin struct {
	User []rawAdminUser `toml:"user"`
}

type rawAdminUser struct {
	Name         string `toml:"name"`
	PasswordHash string `toml:"password_hash,omitempty"`
	TokenHash    string `toml:"token_hash,omitempty"`
	Role         string `toml:"role"`
}

type rawSettings struct {
	Name              string  `toml:"name"`
	HeartbeatInterval *string `toml:"heartbeat_interval"`
	MonitorTimeout    *string `toml:"monitor_timeout"`
	MulticastGroup    *string `toml:"multicast_group"`
	MulticastPort     *int64  `toml:"multicast_port"`
	HeartbeatMode     *string `toml:"heartbeat_mode"`
	GossipPort        *int64  `toml:"gossip_port"`
	ConfigPort        *int64  `toml:"config_port"`
	Verbose           bool    `toml:"verbose"`
}

type rawMember struct {
	Name      string `toml:"name"`
	Address   string `toml:"address"`
	PublicKey string `toml:"public_key"`
	CanUpdate *bool  `toml:"can_update"`
	Location  string `toml:"location"`
}

type rawGroup struct {
	Name          string           `toml:"name"`
	Mode          string           `toml:"mode"`
	IPs           []string         `toml:"ips"`
	Members       []string         `toml:"members"`
	Passive       []string         `toml:"passive"`
	KeepTogether  bool             `toml:"keep_together"`
	Interface     string           `toml:"interface"`
	PrefixLen     int64            `toml:"prefix_len"`
	PrefixRoute   bool             `toml:"prefix_route"`
	Hash          string           `toml:"hash"`
	FailbackDelay string           `toml:"failback_delay"`
	Slots         map[string]int64 `toml:"slots"`
	GARPCount     *int64           `toml:"garp_count"`
	GARPSpread    *string          `toml:"garp_spread"`
	GARPRefresh   *string          `toml:"garp_refresh"`
}

type rawSelfTest struct {
	Gateway      string   `toml:"gateway"`
	CheckIPs     []string `toml:"check_ips"`
	Interval     *string  `toml:"interval"`
	Timeout      *string  `toml:"timeout"`
	FailAfter    *int64   `toml:"fail_after"`
	RecoverAfter *int64   `toml:"recover_after"`
	CheckLinks   *bool    `toml:"check_links"`
}

type rawEvents struct {
	SerfHandlers   []string    `toml:"serf_handlers"`
	MaxConcurrent  *int64      `toml:"max_concurrent"`
	DefaultTimeout *string     `toml:"default_timeout"`
	Action         []rawAction `toml:"action"`
}

type rawAction struct {
	Name         string   `toml:"name"`
	Type         string   `toml:"type"`
	Events       []string `toml:"events"`
	Groups       []string `toml:"groups"`
	Timeout      string   `toml:"timeout"`
	Command      string   `toml:"command"`
	URL          string   `toml:"url"`
	Retries      *int64   `toml:"retries"`
	SMTPServer   string   `toml:"smtp_server"`
	StartTLS     *bool    `toml:"starttls"`
	From         string   `toml:"from"`
	To           []string `toml:"to"`
	Username     string   `toml:"username"`
	PasswordFile string   `toml:"password_file"`
	BatchWindow  *string  `toml:"batch_window"`
	MaxPerHour   *int64   `toml:"max_per_hour"`
}

type rawAgent struct {
	Node               string `toml:"node"`
	ClusterConfig      string `toml:"cluster_config"`
	DataDir            string `toml:"data_dir"`
	KeyFile            string `toml:"key_file"`
	SecretFile         string `toml:"secret_file"`
	Bind               string `toml:"bind"`
	HeartbeatInterface string `toml:"heartbeat_interface"`
	Socket             string `toml:"socket"`
	LogLevel           string `toml:"log_level"`
	LogFormat          string `toml:"log_format"`
	AdminListen        string `toml:"admin_listen"`
	MetricsListen      string `toml:"metrics_listen"`
	XDPMode            string `toml:"xdp_mode"`
}
