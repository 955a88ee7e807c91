#!/bin/sh
# End-to-end demo without root: the capture side (output serve) streams
# examples/tone.opus over a Unix socket in a temp dir to the main-app side
# (output recv), which records what arrives as a new Ogg Opus file.
set -eu
cd "$(dirname "$0")/.."
agent="node_modules/.bin/bun src/main.ts"
dir=$(mktemp -d /tmp/audio-agent-demo.XXXXXX)
sock="$dir/audio_output.sock"

$agent output serve --socket "$sock" --source examples/tone.opus --format ogg &
server=$!
$agent output recv --socket "$sock" --sink "$dir/received.opus" --format ogg --once --connect-timeout 10
wait "$server"

echo
echo "sent:     examples/tone.opus ($(wc -c < examples/tone.opus) bytes)"
echo "received: $dir/received.opus ($(wc -c < "$dir/received.opus") bytes)"
if command -v opusinfo >/dev/null 2>&1; then opusinfo "$dir/received.opus" | grep -E "Channels|Playback length"; fi
echo "listen:   opusdec $dir/received.opus - | aplay   (or ffplay $dir/received.opus)"
