#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter (PyMC 6 and ArviZ 1 need it).
for candidate in python3.13 python3.12 python3; do
  if path=$(command -v "$candidate" 2>/dev/null) && "$path" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    echo "$path"; exit 0
  fi
done
for path in "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
  if [ -x "$path" ] && "$path" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    echo "$path"; exit 0
  fi
done
echo "error: no Python >= 3.12 found; install python3.12 (PyMC 6 and ArviZ 1 require it)" >&2
echo false
exit 1
