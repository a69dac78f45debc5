#!/bin/sh
# Vendors jsPsych's built browser files at pinned versions into study/static/vendor/jspsych/.
# Run by hand when the pins change (needs `npm`, or curl + tar with NPM=curl); the study
# server downloads nothing at run time. The packages carry no LICENSE file (MIT, declared in
# package.json), so the licence text is written from the jsPsych repository's LICENSE.
set -eu
JSPSYCH=8.3.0
PLUGINS="plugin-fullscreen@2.1.0 plugin-html-button-response@2.1.0 \
plugin-html-keyboard-response@2.2.0 plugin-html-slider-response@2.1.0 \
plugin-survey-likert@2.1.0 plugin-video-keyboard-response@2.1.0"
REGISTRY=${NPM_REGISTRY:-https://registry.npmjs.org}

here=$(cd "$(dirname "$0")" && pwd)
dest="$here/../static/vendor/jspsych"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch() {  # fetch NAME VERSION -> $tmp/NAME/package
  pkg=$1 ver=$2 base=${1##*/}
  curl -fsSL "$REGISTRY/$pkg/-/$base-$ver.tgz" -o "$tmp/$base.tgz"
  mkdir -p "$tmp/$base"
  tar xzf "$tmp/$base.tgz" -C "$tmp/$base"
  grep -q "\"version\": \"$ver\"" "$tmp/$base/package/package.json"
  grep -q '"license": "MIT"' "$tmp/$base/package/package.json"
}

rm -rf "$dest"
mkdir -p "$dest"
fetch jspsych "$JSPSYCH"
cp "$tmp/jspsych/package/dist/index.browser.min.js" "$dest/jspsych.js"
cp "$tmp/jspsych/package/css/jspsych.css" "$dest/jspsych.css"
echo "jspsych $JSPSYCH" > "$dest/VERSIONS"
for p in $PLUGINS; do
  name=${p%@*} version=${p#*@}
  fetch "@jspsych/$name" "$version"
  cp "$tmp/$name/package/dist/index.browser.min.js" "$dest/$name.js"
  echo "@jspsych/$name $version" >> "$dest/VERSIONS"
done
(cd "$dest" && sha256sum -- *.js *.css > SHA256SUMS)
cat > "$dest/LICENSE" <<'LICENSE'
jsPsych and its plugins (https://github.com/jspsych/jsPsych), versions in VERSIONS.

The MIT License (MIT)

Copyright (c) 2014-2024 Joshua R. de Leeuw

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
LICENSE
echo "vendored into $dest:"
cat "$dest/VERSIONS"
