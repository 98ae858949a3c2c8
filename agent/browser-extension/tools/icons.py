#!/usr/bin/env python3
"""Draw the extension's icons (icons/16.png, 32.png, 48.png, 128.png).

Standard library only (zlib + struct), deterministic: the same script gives
byte-identical PNGs, so the icons can be rebuilt and checked at any time.
The picture is a blue rounded square with a white eye (the "monitored" sign).

    python3 tools/icons.py            # writes into ../icons next to this file
    python3 tools/icons.py OUTDIR
"""
import os
import struct
import sys
import zlib

SIZES = (16, 32, 48, 128)
BLUE = (0x1f, 0x5f, 0xa8)
WHITE = (0xff, 0xff, 0xff)
DARK = (0x10, 0x2a, 0x4a)
SS = 4  # supersampling per axis, for smooth edges


def inside_rounded_square(x, y):
    """(x, y) in the unit square; corner radius 0.22."""
    r = 0.22
    cx = min(max(x, r), 1 - r)
    cy = min(max(y, r), 1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def inside_eye(x, y):
    """Almond shape: intersection of two discs, centred at (0.5, 0.5)."""
    # Two circles of radius R whose centres sit above and below the middle;
    # their intersection is a lens 0.76 wide and 0.44 tall.
    half_w, half_h = 0.38, 0.22
    big_r = (half_w ** 2 + half_h ** 2) / (2 * half_h)
    off = big_r - half_h
    dx = x - 0.5
    return (dx ** 2 + (y - 0.5 + off) ** 2 <= big_r ** 2
            and dx ** 2 + (y - 0.5 - off) ** 2 <= big_r ** 2)


def inside_pupil(x, y):
    return (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.13 ** 2


def pixel(px, py, size):
    """Average the supersamples of one pixel into RGBA."""
    acc = [0, 0, 0, 0]
    for sy in range(SS):
        for sx in range(SS):
            x = (px + (sx + 0.5) / SS) / size
            y = (py + (sy + 0.5) / SS) / size
            if not inside_rounded_square(x, y):
                continue
            if inside_pupil(x, y):
                colour = DARK
            elif inside_eye(x, y):
                colour = WHITE
            else:
                colour = BLUE
            acc[0] += colour[0]
            acc[1] += colour[1]
            acc[2] += colour[2]
            acc[3] += 255
    n = SS * SS
    alpha = acc[3] // n
    if alpha == 0:
        return (0, 0, 0, 0)
    covered = acc[3] // 255
    return (acc[0] // covered, acc[1] // covered, acc[2] // covered, alpha)


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png(size):
    rows = bytearray()
    for py in range(size):
        rows.append(0)  # filter: none
        for px in range(size):
            rows.extend(pixel(px, py, size))
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
            + chunk(b"IEND", b""))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "icons")
    os.makedirs(out, exist_ok=True)
    for size in SIZES:
        path = os.path.join(out, "%d.png" % size)
        with open(path, "wb") as f:
            f.write(png(size))
        print(path)


if __name__ == "__main__":
    main()
