#!/usr/bin/env bash
# The main job on an embedded default: writes a tiny random-weight TI2V-5B model (once) and runs
# the real runner on it on the CPU. The MP4 lands in ./demo.mp4 (noise: the weights are random).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(bash "$root/hack/python-env.sh")
model=${VIDEOGEN_CACHE:-$HOME/.cache/videogen}/tiny-ti2v-5b
[ -f "$model/model_index.json" ] || "$venv/bin/python" -m videogen_runner.tiny "$model" --family ti2v-5b >&2
exec "$venv/bin/videogen-runner" --model_path "$model" --prompt "a majestic eagle flying over the stormy sea" \
  --size 256*256 --frame_num 17 --sample_steps 4 --base_seed 42 --output_path "${1:-demo.mp4}" \
  --termination-message-path /dev/null
