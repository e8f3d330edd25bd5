#!/usr/bin/env python3
"""Summarizes V8 .cpuprofile files (node --cpu-prof): the heaviest functions by self time and,
for the project's own TypeScript, by inclusive time (where the host-side seconds go).

  python3 bench/convert-8b/profile_summary.py <dir-or-file> [--top 30]
"""
import collections
import glob
import json
import os
import sys


def summarize(path, top):
    d = json.load(open(path))
    nodes = {n["id"]: n for n in d["nodes"]}
    parent = {c: n["id"] for n in d["nodes"] for c in n.get("children", [])}
    self_t, incl = collections.Counter(), collections.Counter()
    key = lambda n: (n["callFrame"]["functionName"] or "(anonymous)", os.path.basename(n["callFrame"]["url"]), n["callFrame"]["lineNumber"] + 1)
    for s, t in zip(d["samples"], d["timeDeltas"]):
        self_t[key(nodes[s])] += t
        seen, x = set(), s
        while x is not None:
            k = key(nodes[x])
            if k not in seen:
                incl[k] += t
                seen.add(k)
            x = parent.get(x)
    total = sum(d["timeDeltas"]) / 1e6
    out = [f"## {os.path.basename(path)}: {total:.1f} s sampled"]
    out.append("self time:")
    out += [f"  {v / 1e6:8.2f} s  {k[0]} ({k[1]}:{k[2]})" for k, v in self_t.most_common(top)]
    out.append("inclusive time, project .ts files:")
    ts = [(k, v) for k, v in incl.most_common() if k[1].endswith(".ts")][:top]
    out += [f"  {v / 1e6:8.2f} s  {k[0]} ({k[1]}:{k[2]})" for k, v in ts]
    return "\n".join(out)


def main():
    args = sys.argv[1:]
    top = 30
    if "--top" in args:
        top = int(args[args.index("--top") + 1])
    target = args[0]
    files = sorted(glob.glob(os.path.join(target, "*.cpuprofile"))) if os.path.isdir(target) else [target]
    # the main thread's profile: the one with the most call-tree nodes in the project's src/
    # (loader and tokenizer worker threads write their own profiles)
    def project_nodes(f):
        with open(f) as fh:
            d = json.load(fh)
        return sum(1 for n in d["nodes"] if "/src/" in n["callFrame"].get("url", ""))
    files.sort(key=project_nodes, reverse=True)
    for f in files[:1]:
        print(summarize(f, top))


if __name__ == "__main__":
    main()
