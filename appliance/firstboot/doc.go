// Package firstboot configures an appliance node on the box itself: at
// first boot (network on the first NIC, host name, machine-id, SSH host
// keys) and from 'shoal setup' (interactive or from a seed file: host name,
// addresses, root access, the agent file, and creating or joining a
// cluster).
//
// It owns the files it writes under System.Root: /etc/hostname, /etc/hosts'
// 127.0.1.1 line, /etc/systemd/network/10-shoal.network, /etc/machine-id
// (only when uninitialised), /root/.ssh/authorized_keys, the console
// autologin drop-ins, and /var/lib/shoal-firstboot/done. The agent file
// (/etc/shoal/agent.toml) is written by the cluster commands it calls
// through the ClusterOps interface (shoal init / join). It runs external
// programs (ssh-keygen, chpasswd, systemctl, mount) only through the Runner
// interface, so
// tests work in a temporary directory without root. It must not touch the
// dataplane, gossip or the replicated cluster configuration.
package firstboot
