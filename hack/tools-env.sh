#!/usr/bin/env bash
# Prints the environment that points the tests and the demo at the tools hack/build-tools.sh built.
: "${PORTCULLIS_TOOLS:=${XDG_CACHE_HOME:-$HOME/.cache}/portcullis-tools}"
echo "export PORTCULLIS_TOOLS='$PORTCULLIS_TOOLS'"
echo "export PATH='$PORTCULLIS_TOOLS/bin':\"\$PATH\""
