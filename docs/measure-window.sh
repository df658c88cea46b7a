#!/usr/bin/env bash
# Measures the window under Xvfb: time from launch to the first frame (GPU
# renderer via Mesa, and the software renderer), resident memory at idle
# with the software renderer, and the window's CPU use while five connected
# peersockets sit idle for 30 s.
#
#   docs/measure-window.sh          (needs: xvfb xdotool; builds --release)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PEERCONN_BIN:-}" ]; then
  cargo build --release --quiet
fi
bin="${PEERCONN_BIN:-${CARGO_TARGET_DIR:-target}/release/peerconn}"
work=$(mktemp -d)
export PEERCONN_DATA_DIR="$work/data" PEERCONN_CONFIG_DIR="$work/config" PEERCONN_REPORT_STARTUP=1
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export DISPLAY=:78
Xvfb :78 -screen 0 1280x800x24 >/dev/null 2>&1 & pids+=($!)
sleep 1

first_frame() { # backend -> ms (median of 5)
  for _ in 1 2 3 4 5; do
    SLINT_BACKEND="$1" "$bin" 2> "$work/start.err" & local pid=$!
    for _ in $(seq 100); do grep -q first-frame-ms "$work/start.err" && break; sleep 0.1; done
    grep -o 'first-frame-ms [0-9.]*' "$work/start.err" | cut -d' ' -f2
    kill $pid; wait $pid 2>/dev/null || true
  done | sort -n | sed -n 3p
}
echo "launch to first frame (median of 5):"
echo "  winit + femtovg (OpenGL via Mesa): $(first_frame winit-femtovg) ms"
echo "  winit + software renderer:         $(first_frame winit-software) ms"

SLINT_BACKEND=winit-software "$bin" 2>/dev/null & gui=$!; pids+=($gui)
sleep 5
echo "resident memory at idle, software renderer: $(( $(awk '/VmRSS/ {print $2}' /proc/$gui/status) / 1024 )) MiB"

# Five listening peersockets in the window, each with a command-line peer.
win=$(xdotool search --sync --name PeerConn | head -1)
xdotool windowfocus "$win"
eval "$(xdotool getwindowgeometry --shell "$win")"
for i in 1 2 3 4 5; do
  xdotool mousemove $((WIDTH - 250)) 30 click 1; sleep 0.4
  xdotool key Tab ctrl+a; xdotool type --delay 5 "127.0.0.1"; xdotool key Return; sleep 0.6
  port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$PEERCONN_DATA_DIR/peerconn.log" | tail -1 | cut -d: -f2)
  mkfifo "$work/in$i"; sleep 300 > "$work/in$i" & pids+=($!)
  "$bin" connect "127.0.0.1:$port" --name "peer$i" < "$work/in$i" > "$work/out$i" 2>&1 & pids+=($!)
done
sleep 2
connected=$(grep -c "connected to" "$work"/out* | awk -F: '{s+=$2} END {print s}')
ticks() { awk '{print $14 + $15}' "/proc/$gui/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); sleep 30; t1=$(ticks)
echo "CPU of the window over 30 s with $connected connected idle peersockets: $(( (t1 - t0) * 1000 / hz )) ms ($(awk "BEGIN {printf \"%.2f\", ($t1 - $t0) * 100 / $hz / 30}") % of one core)"
