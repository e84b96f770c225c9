#!/usr/bin/env bash
# The Vagrant lab's server (Vagrantfile, docs/vagrant.md), run as root inside the VM by `vagrant up`:
# the project's set-up, the boot files, the live environment, the tiny image, the demo's recipes, then
# `provision serve` with full DHCP on the imaging LAN as a systemd service. Idempotent: `vagrant provision
# server` runs it again (what is built already is reused).
#   contrib/vagrant/server.sh SERVER_IP
# The service is the project's own unit (docs/service.md): it runs /opt/provision/.venv/bin/provision serve
# --config /etc/provision/provision.yaml, so /opt/provision links to /vagrant and the configuration is written
# there.
set -euo pipefail
address=${1:?usage: server.sh SERVER_IP}
src=/vagrant
etc=/etc/provision
config=$etc/provision.yaml
export DEBIAN_FRONTEND=noninteractive
cd "$src"

step() { printf 'provision-lab: %s\n' "$*"; }

# The imaging LAN's interface is the one holding the server's address (eth1 in the Debian box, but names vary).
iface=$(ip -o -4 addr show to "$address/32" | awk '{print $2; exit}')
[ -n "$iface" ] || { echo "provision-lab: no interface holds $address" >&2; ip -brief addr >&2; exit 1; }
prefix=${address%.*}

step "scripts/setup (Debian packages, .venv)"
./scripts/setup
provision=$src/.venv/bin/provision
ln -sfn "$src" /opt/provision  # where contrib/systemd's units look for the project

step "configuration $config (imaging LAN $iface, full DHCP)"
install -d -m 0755 "$etc" "$etc/recipes"
cat >"$config" <<YAML
# Written by contrib/vagrant/server.sh: the Vagrant lab's server (docs/vagrant.md, docs/configuration.md).
interface: $iface
address: $address
network: $prefix.0/24
dhcp:
  mode: full  # the lab's LAN has no other DHCP server
  range_start: $prefix.100
  range_end: $prefix.199
recipes_dir: $etc/recipes
certificates:
  workshop: provision (Vagrant lab)
YAML
# The demo's recipes (provision/lab/demorack.py): erase every drive, image tiny, grow the root file system,
# the hostname hook. A site's own recipes go in the same folder (docs/recipes.md).
.venv/bin/python - "$etc/recipes" <<'PY'
import sys
from pathlib import Path

from provision.lab.demorack import RECIPES

for name, text in RECIPES.items():
    Path(sys.argv[1], name).write_text(text)
PY
"$provision" config check "$config"
"$provision" recipes check "$etc/recipes"

step "boot files (Debian packages) into /var/lib/provision/boot"
./scripts/fetch-boot-files /var/lib/provision/boot
step "live environment (provision live build: ~2 min the first time)"
"$provision" live build --config "$config"
step "the tiny image (provision image build images/tiny.yaml)"
"$provision" image build images/tiny.yaml --config "$config"

step "systemd: contrib/systemd/provision.service (serves $config)"
install -m 0644 contrib/systemd/provision.service /etc/systemd/system/provision.service
systemctl daemon-reload
systemctl enable provision.service
systemctl restart provision.service

step "waiting for the server to answer on http://$address:8080/"
for _ in $(seq 60); do
  if curl -fsS -o /dev/null "http://$address:8080/"; then
    step "serving: dashboard http://$address:8080/ (from the host too), logs: journalctl -u provision"
    exit 0
  fi
  sleep 1
done
systemctl --no-pager status provision.service || true
journalctl --no-pager -u provision.service -n 50 || true
echo "provision-lab: the server did not answer on http://$address:8080/ within 60 s" >&2
exit 1
