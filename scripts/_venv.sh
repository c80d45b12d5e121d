# Sourced by scripts/run, scripts/manage and scripts/test: make .venv and keep
# it in step with one requirements file (REQUIREMENTS, default requirements.txt:
# what running the app needs; scripts/test asks for requirements-dev.txt, which
# adds the test tools). Reinstalls only when that file (or what it includes) changes.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
REQUIREMENTS="${REQUIREMENTS:-requirements.txt}"
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-${REQUIREMENTS%.txt}.sha256"
wanted=$(cat requirements.txt "$REQUIREMENTS" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "==> installing $REQUIREMENTS into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$wanted" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
