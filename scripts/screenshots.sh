#!/usr/bin/env bash
# Regenerate docs/screenshots/*.png: the Dutch browser stories (tests/browser/test_story.py,
# the GP's pages; tests/browser/test_console.py, the region console;
# tests/browser/test_integrations.py, the integrators' pages) with HECHT_SCREENSHOTS=1, which also writes commit-sized copies (1280 wide, 64-colour
# palette, at most 3200 px tall). Full-size originals stay in var/browser/screenshots/.
# Runs on the test stack (scripts/test.sh), so it never touches a `make run` stack.
set -euo pipefail
cd "$(dirname "$0")/.."
export HECHT_SCREENSHOTS=1
scripts/test.sh tests/browser/test_story.py tests/browser/test_console.py tests/browser/test_integrations.py \
  -k '(story and nl) or console or integrator' "$@"
echo "screenshots: $(ls docs/screenshots/*.png | wc -l) files in docs/screenshots/"
