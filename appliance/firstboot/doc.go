// Package firstboot configures an appliance node on the box itself: at
// first boot (network on the first NIC, host name, machine-id, SSH host
// keys) and from 'shoal setup' (interactive or from a seed file: host name,
// addresses, root access, the agent file, and creating or joining a
// cluster).
//
// It owns the files it writes under System.Root: /etc/hostname, /etc/hosts'
// 127.0.1.1 line, /etc/systemd/network/10-shoal.network,
// /etc/shoal/agent.toml, /root/.ssh/authorized_keys, the console autologin
// drop-ins, and /var/lib/shoal-firstboot/done. It runs external programs
// (ssh-keygen, chpasswd, systemctl, mount) only through the Runner
// interface, and cluster operations only through the Cluster interface, so
// tests work in a temporary directory without root. It must not touch the
// dataplane, gossip or the replicated cluster configuration.
package firstboot
