#!/bin/sh
# Runs before the test suite (npm test): the suite drives real Debian tools,
# so check that each is here. Everything present: a few lookups, nothing
# printed. Something missing: as root with apt-get, install its package;
# otherwise stop at once (exit 1) with the one command that installs it.
set -u

missing=""

# The Go original's source, another project's file, is not in the repository:
# where it is found, the interop tests build it with go.
# (${0%/*}, not dirname: the script runs on a PATH that may lack it.)
case $0 in */*) here=${0%/*} ;; *) here=. ;; esac
go_ipc=${AUDIO_AGENT_GO_IPC:-$here/../../shared/seeds/000_4ea07cb9858f3d5e.txt}

# need PACKAGE THING...: each THING is a command on PATH, or an absolute path.
need() {
	package=$1
	shift
	for thing in "$@"; do
		case $thing in
		/*) [ -e "$thing" ] ;;
		*) command -v "$thing" >/dev/null 2>&1 ;;
		esac || {
			missing="$missing $package"
			return
		}
	done
}

check() {
	missing=""
	need opus-tools opusenc opusinfo opusdec     # real Ogg Opus fixtures and decoders
	need ffmpeg ffmpeg                           # an independent demuxer, WAV files
	need oggz-tools oggz-validate                # an independent Ogg validator (liboggz)
	need prometheus promtool                     # the metrics pass promtool
	need busybox busybox                         # the init script under BusyBox
	need qemu-user-static qemu-aarch64-static    # the arm64 binary, emulated
	need libc6-arm64-cross /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1
	need chromium /usr/bin/chromium              # the monitor page
	need fonts-dejavu-core /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
	need systemd systemd-analyze                 # the systemd unit verifies
	need util-linux setpriv                      # another user on the socket
	need util-linux-extra fincore                # page-cache residency (the benchmark drops it)
	need strace strace                           # the mode each bind() creates
	need socat socat                             # README's readers that shut down their sending side
	need netcat-openbsd nc.openbsd               # (socat's, and OpenBSD netcat's -N)
	need faketime /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1  # the wall clock stepped under a running agent
	if [ -e "$go_ipc" ]; then need golang-go go; fi  # the Go original as a peer
}

check
[ -z "$missing" ] && exit 0

install="apt-get update && apt-get install -y --no-install-recommends$missing"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
	echo "test setup: installing$missing" >&2
	log=${TMPDIR:-/tmp}/audio-agent-test-setup.log
	export DEBIAN_FRONTEND=noninteractive
	if ! sh -c "$install" >"$log" 2>&1; then
		tail -20 "$log" >&2
		echo "test setup: apt-get failed (log: $log)" >&2
		exit 1
	fi
	check
	[ -z "$missing" ] && exit 0
	echo "test setup: still missing after apt-get:$missing" >&2
	exit 1
fi
echo "test setup: the tests need these Debian packages:$missing" >&2
echo "install them with: sudo sh -c '$install'" >&2
exit 1
