# Shared by the bench scripts: `source bench/lib.sh`.

# Installs the Debian packages named, if any, with apt-get (as root), or says the command
# to run and exits.
install_packages() {
  [ $# -gt 0 ] || return 0
  echo "installing $* from Debian's packages" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root: run  sudo apt-get update && sudo apt-get install -y $*" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}
