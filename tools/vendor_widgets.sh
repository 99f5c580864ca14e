#!/usr/bin/env bash
# Refresh mlwork/resources/widgets/: the standalone Jupyter widget manager that mlwork.pipelines.html inlines
# into run reports so ipywidgets panels render offline (no CDN at run time).
# Usage: tools/vendor_widgets.sh [HTML_MANAGER_VERSION]   (needs npm and the project's .venv; run from anywhere)
# Pick the @jupyter-widgets/html-manager release built against the @jupyter-widgets/controls that the
# installed ipywidgets speaks (ipywidgets 8.x <-> html-manager 1.0.x, widget protocol 2).
set -euo pipefail
VERSION="${1:-1.0.15}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/mlwork/resources/widgets"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

(cd "$WORK" && npm pack --silent "@jupyter-widgets/html-manager@$VERSION" >/dev/null)
tar xzf "$WORK"/jupyter-widgets-html-manager-"$VERSION".tgz -C "$WORK"
PKG="$WORK/package"

# embed.js needs no require.js and bundles the built-in widgets (base, controls, output); the font files of
# Font Awesome that it references are not shipped (icons fall back to nothing, no request leaves the machine).
JS="$PKG/dist/embed.js"
if grep -qi -e '</script' -e '<!--' "$JS"; then
  echo "embed.js contains '</script' or '<!--': it cannot be inlined in a <script> element as is" >&2
  exit 1
fi
mkdir -p "$DEST"
cp "$JS" "$DEST/embed.js"
cp "$PKG/dist/embed.js.LICENSE.txt" "$DEST/embed.js.LICENSE.txt"
# The npm tarball carries no licence file; ipywidgets (same repository, BSD-3-Clause) ships it in its wheel.
"$PY" - "$DEST/LICENSE" <<'PYEOF'
import sys
from importlib.metadata import distribution
d = distribution('ipywidgets')
lic = next(f for f in d.files if f.name == 'LICENSE')
open(sys.argv[1], 'w').write(lic.locate().read_text())
PYEOF
SHA=$(sha256sum "$DEST/embed.js" | cut -d' ' -f1)
cat > "$DEST/README.md" <<MD
# Vendored: @jupyter-widgets/html-manager $VERSION (dist/embed.js)

The standalone widget manager from the npm registry (\`npm pack @jupyter-widgets/html-manager@$VERSION\`),
unmodified. \`mlwork.pipelines.html.notebook_html\` inlines it into run reports whose notebook holds widget
state, so ipywidgets panels render from a file:// page with no network. It bundles the built-in widgets
(@jupyter-widgets/base, controls, output) and needs no require.js.

- embed.js: sha256 $SHA, $(stat -c %s "$DEST/embed.js") bytes
- LICENSE: BSD-3-Clause (Project Jupyter Contributors; the ipywidgets repository's licence)
- embed.js.LICENSE.txt: licences of the third-party code bundled in embed.js (jQuery, jQuery UI: MIT, ...)

Refresh with \`tools/vendor_widgets.sh [VERSION]\`.
MD
echo "vendored html-manager $VERSION into $DEST"; ls -l "$DEST"
