#!/usr/bin/env bash
# Synthetic training trajectories from ManiSkill3 (make synth-maniskill N=200), offline on CPU:
#   1. its own venv (.venv-maniskill): mani-skill 3.0.1 needs numpy<2 (mplib segfaults under numpy 2);
#   2. a Vulkan device for SAPIEN: bookworm's lavapipe is too old, bookworm-backports' (Mesa 25) works; the two
#      .debs are downloaded with a private apt sources list and unpacked under .cache/vulkan (no root install);
#   3. tokenizers/maniskill_generate.py: motion-planning solutions, 2 processes, disjoint seeds, FK conversion to
#      7-D end-effector deltas, a replay check against ManiSkill's own pd_ee_delta_pose converter;
#   4. the main venv writes the RLDS datasets maniskill_synth and maniskill_heldout under $DATA.
# N counts successful trajectories (split evenly over the 6 tasks). Every step is skipped when its result already
# exists; generation resumes per trajectory, and a larger N extends an existing set (the RLDS sets are rebuilt).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
OUT=${OUT:-data/maniskill}
DATA=${DATA:-data/rlds}
VENV=.venv-maniskill
VK=$PWD/.cache/vulkan

if [ ! -f "$VENV/.installed" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --isolated -q --upgrade pip
  "$VENV/bin/pip" install --isolated -q "mani-skill==3.0.1" "sapien==3.0.3" "mplib==0.1.1" "numpy<2" "opencv-python<4.12" "torch==2.13.0"
  touch "$VENV/.installed"
fi

if [ ! -f "$VK/lvp_icd.json" ]; then
  mkdir -p "$VK/lists/partial" "$VK/cache/archives/partial" "$VK/debs" "$VK/root"
  printf 'deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-backports main\n' > "$VK/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$VK/sources.list" -o "Dir::Etc::SourceParts=/dev/null" -o "Dir::State::Lists=$VK/lists" -o "Dir::Cache=$VK/cache")
  apt-get "${apt_opts[@]}" update -qq
  (cd "$VK/debs" && apt-get "${apt_opts[@]}" download mesa-vulkan-drivers/bookworm-backports libvulkan1)
  for deb in "$VK"/debs/*.deb; do dpkg-deb -x "$deb" "$VK/root"; done
  printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.4.305"}}\n' \
    "$VK/root/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so" > "$VK/lvp_icd.json.tmp"
  mv "$VK/lvp_icd.json.tmp" "$VK/lvp_icd.json"
fi
export VK_ICD_FILENAMES="$VK/lvp_icd.json" VK_DRIVER_FILES="$VK/lvp_icd.json"
export LD_LIBRARY_PATH="$VK/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

"$VENV/bin/python" tokenizers/maniskill_generate.py --out "$OUT" --num "$N" --procs 2 --check 2
.venv/bin/python -m openvla_vq.sim.maniskill_rlds --episodes "$OUT" --out "$DATA"
