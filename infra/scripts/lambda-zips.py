#!/usr/bin/env python3
"""The deployment zips of every function of template.yaml, from a `sam build` output (.aws-sam/build).

Checks that every AWS::Serverless::Function of the template has .aws-sam/build/<LogicalId>/bootstrap, that
each is an ELF executable of the expected architecture, zips each one as `sam package` / `sam deploy` do
(a single `bootstrap`, deflate at zlib's default level, executable bit kept) into
.aws-sam/zips/<LogicalId>.zip, and prints a table of the sizes. Exits non-zero when a function is missing or
of the wrong architecture.

  lambda-zips.py [--arch arm64|x86_64] [--build-dir .aws-sam/build] [--zip-dir .aws-sam/zips]
"""

import argparse
import os
import re
import sys
import zipfile

ELF_MACHINE = {183: "arm64", 62: "x86_64"}


def functions(template):
    """(logical id, binary name) of every AWS::Serverless::Function, in template order."""
    out = []
    with open(template) as f:
        text = f.read()
    # Top-level resources are two-space-indented keys; a function's binary is Metadata.BuildProperties.Binary.
    for m in re.finditer(r"^  (\w+):\n((?:    .*\n|\s*\n)+)", text, re.M):
        body = m.group(2)
        if re.search(r"^    Type: AWS::Serverless::Function\s*$", body, re.M):
            binary = re.search(r"^        Binary: ([\w-]+)\s*$", body, re.M)
            out.append((m.group(1), binary.group(1) if binary else None))
    return out


def elf_arch(path):
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return "not ELF"
    return ELF_MACHINE.get(int.from_bytes(head[18:20], "little"), "other")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--template", default="template.yaml")
    p.add_argument("--build-dir", default=".aws-sam/build")
    p.add_argument("--zip-dir", default=".aws-sam/zips")
    p.add_argument("--arch", default=None, help="expected architecture (default: the template's Globals)")
    a = p.parse_args()

    fns = functions(a.template)
    if a.arch is None:
        with open(a.template) as f:
            m = re.search(r"^    Architectures: \[(\w+)\]", f.read(), re.M)
        a.arch = m.group(1) if m else "x86_64"
    os.makedirs(a.zip_dir, exist_ok=True)
    for old in os.listdir(a.zip_dir):  # zips of functions no longer in the template
        if old.endswith(".zip"):
            os.remove(os.path.join(a.zip_dir, old))
    problems, rows = [], []
    for logical_id, binary in fns:
        boot = os.path.join(a.build_dir, logical_id, "bootstrap")
        if not os.path.exists(boot):
            problems.append(f"{logical_id}: no {boot}")
            continue
        arch = elf_arch(boot)
        if arch != a.arch:
            problems.append(f"{logical_id}: {boot} is {arch}, expected {a.arch}")
        z = os.path.join(a.zip_dir, logical_id + ".zip")
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(boot, "bootstrap")
        rows.append((binary or "?", logical_id, arch, os.path.getsize(boot), os.path.getsize(z)))

    mib = 1024 * 1024
    print(f"{'function':<30} {'logical id':<38} {'arch':<7} {'bootstrap':>10} {'zip':>10}")
    for binary, logical_id, arch, size, zsize in sorted(rows):
        print(f"{binary:<30} {logical_id:<38} {arch:<7} {size / mib:6.2f} MiB {zsize / mib:6.2f} MiB")
    if rows:
        total_z = sum(r[4] for r in rows)
        print(f"{len(rows)} of {len(fns)} functions; zips {min(r[4] for r in rows) / mib:.2f} to "
              f"{max(r[4] for r in rows) / mib:.2f} MiB, {total_z / mib:.1f} MiB in all, in {a.zip_dir}/")
    for problem in problems:
        print("error:", problem, file=sys.stderr)
    return 1 if problems or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
