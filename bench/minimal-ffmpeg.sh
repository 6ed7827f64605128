#!/usr/bin/env bash
# A static ffmpeg of about 6 MB (2.6 MB gzipped) with only what the runner's MP4 export and its
# check need (rawvideo in, libx264 out, MP4 mux; H.264 decode and MP4 demux to read it back),
# built from Debian's ffmpeg source and libx264. It travels to the GPU machine beside the wheels
# (bench/RESULTS.md): imageio-ffmpeg's wheel (68 MB) does not fit in what a call carries.
# Writes OUT (default .whl/ffmpeg.gz); imageio uses it through IMAGEIO_FFMPEG_EXE.
set -euo pipefail
out=${1:-.whl/ffmpeg.gz}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sources=/etc/apt/sources.list.d/videogen-ffmpeg-src.sources
printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  > "$sources"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q libx264-dev nasm pkg-config >/dev/null
(cd "$work" && apt-get source --download-only -q ffmpeg >/dev/null)
rm "$sources"
tar -xf "$work"/ffmpeg_*.orig.tar.xz -C "$work"
cd "$work"/ffmpeg-*/
./configure --enable-gpl --enable-static --disable-shared --disable-doc --disable-debug --disable-ffplay \
  --disable-ffprobe --disable-everything --disable-autodetect --enable-libx264 \
  --enable-encoder=libx264,rawvideo --enable-decoder=rawvideo,h264 --enable-parser=h264 \
  --enable-demuxer=rawvideo,mov,image2pipe --enable-muxer=mp4,mov,rawvideo,image2pipe \
  --enable-protocol=file,pipe --enable-filter=scale,format,null,fps,setpts,trim --enable-swscale \
  --extra-ldflags=-static --pkg-config-flags=--static >/dev/null
make -j"$(nproc)" ffmpeg >/dev/null
cd - >/dev/null
mkdir -p "$(dirname "$out")"
gzip -9 -c "$work"/ffmpeg-*/ffmpeg > "$out"
echo "$out: $(stat -c %s "$out") bytes"
