# Shoal appliance: remind the console user to configure the node.
if [ "$(id -u)" = 0 ] && [ ! -e /etc/shoal/agent.toml ]; then
	echo "This Shoal appliance is not configured yet: run 'shoal setup'."
fi
