#!/bin/sh
# Build the browser extension packages, reproducibly.
#
#   agent/browser-extension/build.sh
#
# Produces, under agent/browser-extension/dist/:
#   chromium/                   loadable unpacked (chromium --load-extension=dist/chromium)
#   firefox/                    the same files with firefox/manifest.json as manifest.json
#   invigilator-chromium.zip    zip of chromium/ (for packing as a CRX / store upload)
#   invigilator-firefox.xpi     zip of firefox/ (unsigned; sign before deploying)
#
# Needs only coreutils and python3 (zipfile). The archives hold the files in
# sorted order with a fixed date (1980-01-01) and fixed modes, so two runs
# give byte-identical archives. The file list is explicit: the development
# key (dev-key.pem), tools/, test/, firefox/, dist/ and this script are never
# shipped.
set -eu

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
cd "$here"

FILES="background.js notice.html notice.js notice.css icons/16.png icons/32.png icons/48.png icons/128.png"

for f in manifest.json managed_schema.json firefox/manifest.json $FILES; do
    [ -f "$f" ] || { echo "build.sh: missing $f" >&2; exit 1; }
done

rm -rf dist
mkdir -p dist/chromium/icons dist/firefox/icons

for f in $FILES; do
    cp "$f" "dist/chromium/$f"
    cp "$f" "dist/firefox/$f"
done
cp manifest.json dist/chromium/manifest.json
# The schema of the school's policy for the extension (the collector's address on devices
# with no agent): Chromium-family browsers only.
cp managed_schema.json dist/chromium/managed_schema.json
cp firefox/manifest.json dist/firefox/manifest.json
find dist -type d -exec chmod 755 {} +
find dist -type f -exec chmod 644 {} +

python3 - dist/chromium dist/invigilator-chromium.zip dist/firefox dist/invigilator-firefox.xpi <<'PY'
import os
import sys
import zipfile

def pack(src, out):
    names = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in files:
            path = os.path.join(root, name)
            names.append(os.path.relpath(path, src).replace(os.sep, "/"))
    names.sort()
    with zipfile.ZipFile(out, "w") as z:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix
            info.external_attr = 0o100644 << 16
            with open(os.path.join(src, name), "rb") as f:
                z.writestr(info, f.read(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    print(out)

args = sys.argv[1:]
for i in range(0, len(args), 2):
    pack(args[i], args[i + 1])
PY

(cd dist && sha256sum invigilator-chromium.zip invigilator-firefox.xpi)
