#!/usr/bin/env python3
"""Which of the default build's compiled crates a build with more features rebuilds.

A crate is rebuilt when its own features differ between the two builds, or when any crate it
depends on (proc macros and build scripts included) is rebuilt. CI builds the crate twice in
release, once as `cargo test --release` and once with `--features wgpu` (scripts/wgpu_check.sh);
Cargo.toml turns on a few features always so that the second build reuses most of the first.
This lists what it still rebuilds, from `cargo tree` alone (nothing is compiled):

    python3 scripts/feature_reuse.py            # --features wgpu against the default build
    python3 scripts/feature_reuse.py cuda,wgpu

The crates only the feature brings (wgpu, cubecl, ...) are counted, not listed; burn's crates
are always rebuilt, since `wgpu` turns on burn-std's `cubecl` feature.
"""
import re
import subprocess
import sys


def unit_graph(features):
    """`name version|features` -> the same for each dependency, from `cargo tree`."""
    command = ["cargo", "tree", "-p", "transfer-vision", "-e", "normal,build,dev",
               "--prefix", "depth", "-f", "{p}|{f}"]
    if features:
        command += ["--features", features]
    listing = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    graph, path = {}, []
    for line in listing.splitlines():
        match = re.match(r"^(\d+)(.*)$", line)
        if not match:
            continue
        depth, unit = int(match.group(1)), match.group(2).replace(" (*)", "")
        package, enabled = unit.split("|", 1)
        unit = f"{package.strip()}|{enabled.strip()}"
        graph.setdefault(unit, set())
        path = path[:depth]
        if path:
            graph[path[-1]].add(unit)
        path.append(unit)
    return graph


def main():
    features = sys.argv[1] if len(sys.argv) > 1 else "wgpu"
    default, extended = unit_graph(""), unit_graph(features)
    rebuilt = {}

    def is_rebuilt(unit):
        if unit not in rebuilt:
            rebuilt[unit] = False  # cycles through dev-dependencies end here
            rebuilt[unit] = unit not in default or any(map(is_rebuilt, extended[unit]))
        return rebuilt[unit]

    default_packages = {unit.split("|")[0] for unit in default}
    shared = sorted({unit.split("|")[0] for unit in extended
                     if is_rebuilt(unit) and unit.split("|")[0] in default_packages
                     and not unit.startswith("transfer-vision ")})
    new = {unit.split("|")[0] for unit in extended if unit.split("|")[0] not in default_packages}
    print(f"--features {features}: {len(extended)} crates to build, {len(new)} of them new, "
          f"{len(shared)} rebuilt from the default build's:")
    for package in shared:
        print(f"  {package}")


if __name__ == "__main__":
    main()
