# Source me: makes (once) and activates the audiolab environment. Idempotent; a second run costs seconds.
#   AUDIOLAB_VENV   where the virtualenv lives (default ~/.cache/audiolab/venv, shared by all clones)
#   AUDIOLAB_NO_APT set to 1 to skip Debian packages (e.g. without root)
set -eo pipefail
AUDIOLAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export AUDIOLAB_VENV=${AUDIOLAB_VENV:-$HOME/.cache/audiolab/venv}

# Debian packages: corpora generators (speech, MIDI rendering, recorded kits/music), audio codecs, headless
# Chromium for the browser tests, MathJax for the offline docs.
APT_PACKAGES="espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fluidsynth
  fluid-soundfont-gm musescore-general-soundfont timgm6mb-soundfont sox libsox-fmt-all hydrogen-drumkits
  sonic-pi-samples wesnoth-1.16-music fortunes fortunes-min libsndfile1 ffmpeg chromium libjs-mathjax"
if [ "${AUDIOLAB_NO_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
  missing=$(for p in $APT_PACKAGES; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "[env] installing Debian packages:" $missing
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
  fi
fi

# Python environment: rebuilt only when the requirements in settings.ini or the pins in constraints.txt change.
# Every extra ([all]) + the dev tools, with the exact versions the pipeline's results were produced with.
stamp=$(cat <(grep -E '^([a-z]+_)?requirements' "$AUDIOLAB_ROOT/settings.ini") "$AUDIOLAB_ROOT/constraints.txt" | sha1sum | cut -c1-16)
if [ ! -x "$AUDIOLAB_VENV/bin/python" ]; then
  echo "[env] creating $AUDIOLAB_VENV"; python3 -m venv "$AUDIOLAB_VENV"
fi
if [ "$(cat "$AUDIOLAB_VENV/.audiolab-deps" 2>/dev/null)" != "$stamp" ]; then
  echo "[env] installing Python requirements ($(grep -o '^torch==[0-9.]*' "$AUDIOLAB_ROOT/constraints.txt"))"
  "$AUDIOLAB_VENV/bin/pip" install -q --upgrade pip setuptools wheel
  "$AUDIOLAB_VENV/bin/pip" install -q -c "$AUDIOLAB_ROOT/constraints.txt" -e "$AUDIOLAB_ROOT[all,dev]" 2>&1 | grep -v -e "^WARNING: Location" -e Warning -e "^ *[!*]" -e "^ *$" || true
  echo "$stamp" > "$AUDIOLAB_VENV/.audiolab-deps"
fi
# The editable install points at one clone; re-point it (no dependencies, seconds) when run from another.
if [ "$("$AUDIOLAB_VENV/bin/python" -c 'import audiolab,os;print(os.path.dirname(os.path.dirname(audiolab.__file__)))' 2>/dev/null)" != "$AUDIOLAB_ROOT" ]; then
  "$AUDIOLAB_VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$AUDIOLAB_ROOT" >/dev/null 2>&1
fi
export PATH="$AUDIOLAB_VENV/bin:$PATH"
# 2-core CPUs: keep BLAS/OpenMP from oversubscribing when several workers run.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2}
export MPLBACKEND=${MPLBACKEND:-Agg} PYTHONHASHSEED=0
cd "$AUDIOLAB_ROOT"
