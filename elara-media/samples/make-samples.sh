#!/usr/bin/env bash
# Regenerates the sample media in this directory, byte-identically on the same ffmpeg/espeak-ng
# build (Debian 12: ffmpeg 5.1, espeak-ng 1.51). Needs: ffmpeg (libopus, libx264, libvpx, libaom),
# espeak-ng. Usage: bash make-samples.sh [OUTPUT_DIR]   (default: the directory of this script)
#
# Determinism: synthetic video from ffmpeg's testsrc2 (a fixed pattern), speech from espeak-ng with
# fixed voice/speed/pitch, every encoder single-threaded, bitexact flags on formats and codecs,
# no metadata copied, fixed Ogg serial number (bitexact mode), fixed keyframe placement.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here}"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

ff() { ffmpeg -hide_banner -loglevel error -nostdin -y "$@"; }
bitexact=(-fflags +bitexact -flags:v +bitexact -flags:a +bitexact -map_metadata -1 -threads 1)

# --- speech (espeak-ng) -------------------------------------------------------------------------
text="This is the ELARA media sample. Swarm diffusion carries every frame to the nodes that care \
about it. Audio goes first, keyframes start a group, and a slow link never holds the others back."
espeak-ng -v en-us -s 165 -p 50 -a 100 -w "$tmp/speech.wav" "$text"

# Ogg Opus, 48 kHz mono, 32 kbit/s, 20 ms frames, exactly 10 s (padded with silence if short).
ff -i "$tmp/speech.wav" -af "aresample=48000,apad" -t 10 -ac 1 \
  -c:a libopus -b:a 32k -vbr off -frame_duration 20 -application voip \
  "${bitexact[@]}" -f ogg "$out/speech.opus"

# PCM16 mono 8 kHz WAV, 3 s, for G.711 (PCMU/PCMA) sources.
ff -i "$tmp/speech.wav" -af "aresample=8000,apad" -t 3 -ac 1 -c:a pcm_s16le \
  "${bitexact[@]}" -f wav "$out/speech-8k.wav"

# --- video (testsrc2, 320x180, 30 fps, 10 s, a keyframe every 2 s) -----------------------------
src=(-f lavfi -i "testsrc2=size=320x180:rate=30:duration=10")

# H.264 Annex B: constrained baseline (no B-frames), one slice per picture, IDR every 60 frames.
ff "${src[@]}" -pix_fmt yuv420p -c:v libx264 -preset veryfast -profile:v baseline -bf 0 \
  -g 60 -keyint_min 60 -sc_threshold 0 -b:v 400k -maxrate 400k -bufsize 400k \
  -x264-params "slices=1:sliced-threads=0:lookahead-threads=1" \
  "${bitexact[@]}" -f h264 "$out/testsrc.h264"

# VP8 in IVF, keyframe every 60 frames, no alt-ref (every IVF frame is a shown frame).
ff "${src[@]}" -pix_fmt yuv420p -c:v libvpx -deadline good -cpu-used 4 -b:v 400k \
  -g 60 -keyint_min 60 -auto-alt-ref 0 -lag-in-frames 0 \
  "${bitexact[@]}" -f ivf "$out/testsrc-vp8.ivf"

# Short, tiny VP9 and AV1 IVF clips (160x90, 4 s) so every IVF codec has a real sample.
small=(-f lavfi -i "testsrc2=size=160x90:rate=30:duration=4")
ff "${small[@]}" -pix_fmt yuv420p -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 100k \
  -g 60 -keyint_min 60 -auto-alt-ref 0 -lag-in-frames 0 -row-mt 0 -tile-columns 0 \
  "${bitexact[@]}" -f ivf "$out/testsrc-vp9.ivf"
ff "${small[@]}" -pix_fmt yuv420p -c:v libaom-av1 -usage realtime -cpu-used 8 -b:v 100k \
  -g 60 -keyint_min 60 -lag-in-frames 0 -row-mt 0 -tiles 1x1 \
  "${bitexact[@]}" -f ivf "$out/testsrc-av1.ivf"

ls -l "$out"/*.opus "$out"/*.wav "$out"/*.h264 "$out"/*.ivf
