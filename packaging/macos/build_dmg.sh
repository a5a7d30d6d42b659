#!/bin/sh
# The macOS .app and .dmg. UNTESTED: written for macOS 13+ with Xcode's command line tools,
# never run (the project's CI has no Mac yet). See the README's "macOS app" section.
#
#   sh packaging/macos/build_dmg.sh            # unsigned: dist/Finetune Desk.app, dist/finetune-desk-<v>.dmg
#   SIGN_ID="Developer ID Application: NAME (TEAMID)" NOTARY_PROFILE=ftdesk sh packaging/macos/build_dmg.sh
#
# The .app wraps the same onedir bundle (the spec builds it; uv ships inside). Signing: every
# Mach-O inside (the Qt frameworks, the .so files, uv) needs the hardened runtime; `codesign
# --deep` is deprecated for this, so each file is signed, then the app. Notarize with a
# keychain profile made once by `xcrun notarytool store-credentials ftdesk`.
set -eu
cd "$(dirname "$0")/../.."
VERSION=$(.venv/bin/python -c 'from importlib.metadata import version; print(version("finetune-desk"))')
APP="dist/Finetune Desk.app"

.venv/bin/pyinstaller --noconfirm --clean packaging/finetune-desk.spec
rm -rf "$APP"
mkdir -p "$APP/Contents/MacOS" "$APP/Contents/Resources"
cp -R dist/finetune-desk/. "$APP/Contents/MacOS/"
sed "s/@VERSION@/$VERSION/" packaging/macos/Info.plist > "$APP/Contents/Info.plist"
# The icon: an .icns made from resources/icon.svg (qlmanage renders the SVG, iconutil packs it).
ICONSET=$(mktemp -d)/icon.iconset
mkdir -p "$ICONSET"
qlmanage -t -s 1024 -o "$ICONSET" resources/icon.svg >/dev/null
mv "$ICONSET/icon.svg.png" "$ICONSET/icon_512x512@2x.png"
iconutil -c icns "$ICONSET" -o "$APP/Contents/Resources/finetune-desk.icns"

if [ -n "${SIGN_ID:-}" ]; then
  find "$APP/Contents/MacOS" -type f \( -perm -u+x -o -name '*.so' -o -name '*.dylib' \) \
    -exec codesign --force --options runtime --timestamp --sign "$SIGN_ID" {} \;
  codesign --force --options runtime --timestamp --sign "$SIGN_ID" "$APP"
  codesign --verify --strict --verbose=2 "$APP"
fi

DMG="dist/finetune-desk-$VERSION.dmg"
rm -f "$DMG"
hdiutil create -volname "Finetune Desk" -srcfolder "$APP" -ov -format UDZO "$DMG"
if [ -n "${SIGN_ID:-}" ] && [ -n "${NOTARY_PROFILE:-}" ]; then
  codesign --sign "$SIGN_ID" --timestamp "$DMG"
  xcrun notarytool submit "$DMG" --keychain-profile "$NOTARY_PROFILE" --wait
  xcrun stapler staple "$DMG"
fi
echo "$DMG"
