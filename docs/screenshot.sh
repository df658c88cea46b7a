#!/usr/bin/env bash
# Runs PeerConn under Xvfb with two peersockets in a conversation, one of
# them receiving a large file, and writes docs/screenshot.png (or $OUT).
#
#   docs/screenshot.sh [WIDTHxHEIGHT]        default 1280x800
#   PEERCONN_THEME=dark OUT=/tmp/dark.png docs/screenshot.sh
#
# Needs: apt-get install xvfb imagemagick xdotool
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1280x800}
out=${OUT:-docs/screenshot.png}
if [ -z "${PEERCONN_BIN:-}" ]; then
  cargo build --release --quiet
fi
bin="${PEERCONN_BIN:-${CARGO_TARGET_DIR:-target}/release/peerconn}"
work=$(mktemp -d)
export PEERCONN_DATA_DIR="$work/data" PEERCONN_CONFIG_DIR="$work/config"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

export DISPLAY=:77
Xvfb :77 -screen 0 "${size}x24" >/dev/null 2>&1 & pids+=($!)
sleep 1

# Carol listens from the command line; the window will connect to her.
mkfifo "$work/carol.in" "$work/bob.in"
sleep 600 > "$work/carol.in" & pids+=($!)
sleep 600 > "$work/bob.in" & pids+=($!)
# Each peer is another installation, with its own key.
PEERCONN_CONFIG_DIR="$work/carol" "$bin" listen --bind 127.0.0.1 --name carol --json < "$work/carol.in" > "$work/carol.out" 2>&1 & pids+=($!)
sleep 0.5
carol_port=$(grep -o '"addr":"127.0.0.1:[0-9]*' "$work/carol.out" | cut -d: -f3)

"$bin" > "$work/gui.log" 2>&1 & pids+=($!)
sleep 2.5
win=$(xdotool search --onlyvisible --name PeerConn | head -1)
xdotool windowsize "$win" "${size%x*}" "${size#*x}"; sleep 0.5
xdotool windowfocus "$win"
eval "$(xdotool getwindowgeometry --shell "$win")"

# Connect… to carol: the address field has the cursor; the name is above it.
xdotool mousemove $((WIDTH - 158)) 30 click 1; sleep 0.5
xdotool type --delay 10 "127.0.0.1"; xdotool key Tab; xdotool type --delay 10 "$carol_port"
xdotool key shift+Tab shift+Tab ctrl+a; xdotool type --delay 10 "Carol's laptop"; xdotool key Return
sleep 0.8

# Listen… with the proposed port and a pairing code (Tab: address, port,
# Reachable, Require a pairing code, the code); bob connects with the code, so he is verified.
code=4821-0937
xdotool mousemove $((WIDTH - 250)) 30 click 1; sleep 0.5
xdotool key ctrl+a; xdotool type --delay 10 "Backups from Bob"
xdotool key Tab ctrl+a; xdotool type --delay 10 "127.0.0.1"
xdotool key Tab Tab Tab space; sleep 0.3
xdotool key Tab ctrl+a; xdotool type --delay 10 "$code"; xdotool key Return; sleep 0.8
port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$PEERCONN_DATA_DIR/peerconn.log" | tail -1 | cut -d: -f2)
PEERCONN_CONFIG_DIR="$work/bob" "$bin" connect "127.0.0.1:$port" --name bob --code "$code" --downloads "$work" < "$work/bob.in" > "$work/bob.out" 2>&1 & pids+=($!)
sleep 1
echo "Morning! Are you there?" > "$work/bob.in"; sleep 0.4
xdotool windowfocus "$win"
xdotool mousemove $((WIDTH / 2)) $((HEIGHT - 40)) click 1
xdotool type --delay 10 "Yes! Send me the backup when you can."; xdotool key Return; sleep 0.4
truncate -s 6G "$work/backup-2026-11.zip"
echo "/send $work/backup-2026-11.zip" > "$work/bob.in"; sleep 1
# Accept the offer: the card is the fourth item of this chat (under the
# peer's key), its Accept button at a fixed place from the top left of the
# chat pane.
xdotool mousemove 647 418 click 1
sleep 0.5
echo "Here it comes, 6 GB." > "$work/bob.in"
echo "Lunch at one?" > "$work/carol.in"
sleep 2.5
import -window root "$out"
echo "wrote $out"
