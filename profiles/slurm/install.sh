#!/usr/bin/env bash
# Make the bare `snakemake --profile slurm` find this repository's SLURM profile: link
# profiles/slurm as the user profile NAME (default "slurm") in ${XDG_CONFIG_HOME:-~/.config}/snakemake/,
# one of the places Snakemake 9 looks up a profile name. Never replaces an existing profile:
# if one by that name exists, it says so and exits 1 (pick another NAME, or use
# `--profile profiles/slurm`). Running it again is a no-op.
#
#   bash profiles/slurm/install.sh [NAME]
set -euo pipefail

src="$(cd "$(dirname "$0")" && pwd)"
name="${1:-slurm}"
dest="${XDG_CONFIG_HOME:-$HOME/.config}/snakemake/$name"

if [[ -L $dest && "$(readlink -f "$dest")" == "$src" ]]; then
    echo "profile '$name' already links to $src"
    exit 0
fi
if [[ -e $dest || -L $dest ]]; then
    echo "$dest exists and is not this profile; left untouched." >&2
    echo "Install under another name (bash $0 realfake-slurm) or run with --profile $src" >&2
    exit 1
fi
mkdir -p "$(dirname "$dest")"
ln -s "$src" "$dest"
echo "profile '$name' -> $src (snakemake --profile $name)"
