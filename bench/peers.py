#!/usr/bin/env python3
"""Side-by-side ingest benchmark: layerstore against the tools people use
instead, on the same inputs, in one run.

    python3 bench/peers.py                                  # small real set in ../shared/corpus/images
    python3 bench/peers.py --images OUT/images --rounds 3   # the full-size set from make-images.sh
    python3 bench/peers.py --synthetic base-derived         # a seeded synthetic set (see inputs.py)

A script, not a test. It installs nothing: a peer whose command is missing
is listed as skipped (Debian: ``apt-get install borgbackup restic casync
tar-split skopeo``). Inputs:

* ``layers``: the distinct uncompressed layer tars of the docker-archives
  under ``--images`` (or the synthetic set). layerstore ingests them all in
  one process; the peers that take one input per call (``borg import-tar``,
  ``restic backup --stdin``, ``casync make``, ``tar-split disasm``) are
  called once per layer into one repository, and their time is the sum of
  the calls. ``sha256sum`` and ``openssl dgst -sha256`` read every layer in
  one call: the floor of any content-addressed store.
* ``archives``: the docker-archives themselves, for ``skopeo copy`` of every
  image into one OCI layout against ``layerstore load`` of the same files.

Each round runs every tool once on a fresh repository, in a rotated order
(so no tool always runs first or last); the table gives the median of the
rounds. Times are wall times of whole processes, start-up included: on the
small real set (4 MB) layerstore's Python start-up (about 0.25 s) dominates,
so quote figures from the full-size set. "largest call MB/s" is the rate of
the call on the largest input of a tool called once per input; it leaves
out the start-up of the other calls, and depends on how much of that input
is new to the repository. Stored bytes are the apparent sizes of every file the tool wrote
(repository, indexes, catalog; not caches outside the repository). Peak
RSS is the largest of the tool's processes, from GNU time (Debian package
``time``) when installed, else ``os.wait4`` (which then includes this
script's own size at the fork, about 20 MiB).
The inputs are read once before the first round, so every tool reads them
from the page cache.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MB = 1_000_000
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


class Run:
    """One timed run of one tool: ``seconds`` of wall time, ``stored``
    bytes (None when the tool keeps no content), ``rss_kib`` peak, and the
    wall time of each call (for the tools called once per input)."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = []
        self.rss_kib = 0
        self.stored = None

    def call(self, argv, *, stdin=None, env=None, cwd=None, stdout=subprocess.DEVNULL):
        """Run ``argv`` to completion, adding its wall time and peak RSS.

        The peak RSS comes from GNU time (``/usr/bin/time -f %M``) when it is
        installed: a child forked straight from this Python process would
        carry this process's own high-water mark into its ``ru_maxrss``."""
        rss_file = None
        if GNU_TIME:
            fd, rss_file = tempfile.mkstemp(prefix="peers-rss-")
            os.close(fd)
            argv = [GNU_TIME, "-f", "%M", "-o", rss_file, *argv]
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env, cwd=cwd)
        err = p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t0
        rss = usage.ru_maxrss
        if rss_file:
            with open(rss_file) as f:
                lines = f.read().split()
            os.unlink(rss_file)
            rss = int(lines[-1]) if lines and lines[-1].isdigit() else rss
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, argv))} exited {p.returncode}: {err.decode(errors='replace')[-2000:]}")
        self.seconds += dt
        self.calls.append(dt)
        self.rss_kib = max(self.rss_kib, rss)


def tree_size(*paths) -> int:
    """Apparent bytes of every file under ``paths`` (files or folders)."""
    n = 0
    for p in paths:
        p = Path(p)
        if p.is_file():
            n += p.stat().st_size
        elif p.exists():
            n += sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return n


def version(argv) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


# ----------------------------------------------------------------- tools


class Tool:
    name = ""
    command = None      # executable that must be on PATH
    input_kind = "layers"
    keeps_content = True

    def available(self):
        return self.command is None or shutil.which(self.command) is not None

    def version(self):
        return version([self.command, "--version"])

    def run(self, inputs, work: Path) -> Run:
        raise NotImplementedError


_CHILD = r"""
import sys, time
from layerstore.store import Store
root, codec, *paths = sys.argv[1:]
with Store.open(root, codec=codec) as store:
    for p in paths:
        store.ingest(p, media_type="application/vnd.oci.image.layer.v1.tar")
"""

_CHILD_LOAD = r"""
import sys
from layerstore.store import Store
root, *paths = sys.argv[1:]
with Store.open(root) as store:
    for p in paths:
        store.load(p)
"""


class Layerstore(Tool):
    """All layers ingested in one process by ``Store.ingest``."""

    def __init__(self, codec="lz4"):
        self.codec = codec
        self.name = "layerstore" if codec == "lz4" else f"layerstore-{codec}"

    def version(self):
        from layerstore import __version__

        return f"layerstore {__version__}, codec {self.codec}"

    def run(self, inputs, work):
        r = Run()
        r.call([sys.executable, "-c", _CHILD, str(work / "store"), self.codec, *map(str, inputs)])
        r.stored = tree_size(work / "store")
        return r


class LayerstoreLoad(Tool):
    """Every docker-archive loaded in one process by ``Store.load``."""

    name = "layerstore-load"
    input_kind = "archives"

    def version(self):
        from layerstore import __version__

        return f"layerstore {__version__}"

    def run(self, inputs, work):
        r = Run()
        r.call([sys.executable, "-c", _CHILD_LOAD, str(work / "store"), *map(str, inputs)])
        r.stored = tree_size(work / "store")
        return r


class Borg(Tool):
    """``borg import-tar`` once per layer into one unencrypted repository
    (borg's default compression, lz4)."""

    name = command = "borg"

    def run(self, inputs, work):
        env = dict(os.environ, BORG_BASE_DIR=str(work / "base"), BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                   BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        repo = work / "repo"
        subprocess.run(["borg", "init", "--encryption=none", str(repo)], check=True, env=env, capture_output=True)
        r = Run()
        for i, p in enumerate(inputs):
            r.call(["borg", "import-tar", f"{repo}::layer{i}", str(p)], env=env)
        r.stored = tree_size(repo)
        return r


class Restic(Tool):
    """``restic backup --stdin`` once per layer into one repository
    (repository format 2: zstd compression, encrypted)."""

    name = command = "restic"

    def version(self):
        return version(["restic", "version"])

    def run(self, inputs, work):
        env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(work / "repo"),
                   RESTIC_CACHE_DIR=str(work / "cache"))
        subprocess.run(["restic", "init"], check=True, env=env, capture_output=True)
        r = Run()
        for i, p in enumerate(inputs):
            with open(p, "rb") as f:
                r.call(["restic", "backup", "--quiet", "--stdin", "--stdin-filename", f"layer{i}.tar"], stdin=f, env=env)
        r.stored = tree_size(work / "repo")
        return r


class Casync(Tool):
    """``casync make`` of each layer (blob mode) into one chunk store
    (casync's defaults: zstd, 64 KiB average chunks)."""

    name = command = "casync"

    def run(self, inputs, work):
        r = Run()
        for i, p in enumerate(inputs):
            r.call(["casync", "make", f"--store={work / 'store'}", str(work / f"layer{i}.caibx"), str(p)])
        r.stored = tree_size(work)
        return r


class TarSplit(Tool):
    """``tar-split disasm`` of each layer: the tar metadata only (the
    content goes to /dev/null), the part of a layer a file-level store must
    keep beside the content."""

    name = command = "tar-split"
    keeps_content = False

    def version(self):
        return version(["tar-split", "--version"])

    def run(self, inputs, work):
        r = Run()
        for i, p in enumerate(inputs):
            r.call(["tar-split", "disasm", "--no-stdout", "--output", str(work / f"layer{i}.json.gz"), str(p)])
        r.stored = tree_size(work)
        return r


class Skopeo(Tool):
    """``skopeo copy docker-archive:FILE:@N oci:LAYOUT`` for every image of
    every archive, into one OCI layout (a plain content store)."""

    name = command = "skopeo"
    input_kind = "archives"

    def run(self, inputs, work):
        r = Run()
        layout = work / "layout"
        for arc in inputs:
            for n in range(_image_count(arc)):
                r.call(["skopeo", "copy", "--quiet", f"docker-archive:{arc}:@{n}", f"oci:{layout}:{arc.stem}-{n}"])
        r.stored = tree_size(layout)
        return r


class Digest(Tool):
    """A digest tool over every layer in one call: no store."""

    keeps_content = False

    def __init__(self, name, argv):
        self.name, self.argv, self.command = name, argv, argv[0]

    def version(self):
        return version([self.command, "version"] if self.command == "openssl" else [self.command, "--version"])

    def run(self, inputs, work):
        r = Run()
        r.call([*self.argv, *map(str, inputs)])
        return r


def _image_count(arc: Path) -> int:
    import tarfile

    with tarfile.open(arc) as tf:
        return len(json.load(tf.extractfile("manifest.json")))


TOOLS = {
    "layerstore": lambda: Layerstore("lz4"),
    "layerstore-zstd": lambda: Layerstore("zstd"),
    "borg": Borg,
    "restic": Restic,
    "casync": Casync,
    "tar-split": TarSplit,
    "sha256sum": lambda: Digest("sha256sum", ["sha256sum"]),
    "openssl": lambda: Digest("openssl", ["openssl", "dgst", "-sha256"]),
    "layerstore-load": LayerstoreLoad,
    "skopeo": Skopeo,
}


# ----------------------------------------------------------------- driver


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}, Python {platform.python_version()}"


def collect_inputs(args, work: Path):
    """{"layers": [paths], "archives": [paths]} and a description."""
    import inputs

    if args.synthetic:
        d = work / "inputs"
        d.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, t in enumerate(inputs.SYNTHETIC[args.synthetic]()):
            p = d / f"{args.synthetic}-{i}.tar"
            p.write_bytes(t)
            paths.append(p)
        return {"layers": paths, "archives": []}, f"synthetic {args.synthetic} (seeded, LAYERSTORE_BENCH_TREE_MB={inputs.SYNTHETIC_MB})"
    images = Path(args.images) if args.images else inputs.images_dir()
    layers = inputs.real_layers(images)
    if not layers:
        sys.exit(f"peers.py: no docker-archives under {images}")
    return {"layers": layers, "archives": inputs.docker_archives(images)}, f"docker-archives under {images}"


def warm(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", help="folder of docker-archives (default: LAYERSTORE_BENCH_IMAGES or ../shared/corpus/images)")
    ap.add_argument("--synthetic", choices=["small-files", "large-files", "base-derived"], help="use a synthetic set instead")
    ap.add_argument("--rounds", type=int, default=3, help="runs per tool, at least 1 (median reported; default 3)")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of: {', '.join(TOOLS)}")
    ap.add_argument("--work", help="scratch folder (default: a new temporary folder, removed at the end)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    unknown = [k for k in (t.strip() for t in args.tools.split(",")) if k not in TOOLS]
    if unknown:
        ap.error(f"unknown tool {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    work = Path(args.work or tempfile.mkdtemp(prefix="layerstore-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        sets, described = collect_inputs(args, work)
        sizes = {k: sum(p.stat().st_size for p in v) for k, v in sets.items()}
        tools = []
        for key in args.tools.split(","):
            tool = TOOLS[key.strip()]()
            if not tool.available():
                print(f"skipped {tool.name}: `{tool.command}` not found", file=sys.stderr)
            elif not sets[tool.input_kind]:
                print(f"skipped {tool.name}: no {tool.input_kind} in this input set", file=sys.stderr)
            else:
                tools.append(tool)
        if not tools:
            sys.exit("peers.py: none of the chosen tools can run on this input set")
        warm(sets["layers"] + sets["archives"])
        runs = {t.name: [] for t in tools}
        for rnd in range(args.rounds):
            order = tools[rnd % len(tools):] + tools[: rnd % len(tools)]
            for t in order:
                d = work / "runs" / f"{rnd}-{t.name.replace(' ', '_')}"
                d.mkdir(parents=True)
                runs[t.name].append(t.run(sets[t.input_kind], d))
                shutil.rmtree(d)
                print(f"round {rnd + 1}/{args.rounds}: {t.name} {runs[t.name][-1].seconds:.2f} s", file=sys.stderr)
        rows = summarize(tools, runs, sets, sizes)
        print(f"\nMachine: {machine()}")
        print(f"Input: {described}: layers {len(sets['layers'])} files, {sizes['layers']:,} B; "
              f"archives {len(sets['archives'])} files, {sizes['archives']:,} B. "
              f"{'Median of %d rounds' % args.rounds if args.rounds > 1 else 'One round'}.\n")
        print(table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": machine(), "input": described, "sizes": sizes,
                                                   "rounds": args.rounds, "rows": rows}, indent=2))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def summarize(tools, runs, sets, sizes):
    rows = []
    for t in tools:
        rs = runs[t.name]
        total = sizes[t.input_kind]
        secs = statistics.median(r.seconds for r in rs)
        stored = rs[-1].stored if t.keeps_content else None
        row = {
            "tool": t.name, "version": t.version(), "input": t.input_kind, "input_bytes": total,
            "mb_per_s": total / secs / MB, "seconds": secs, "calls": len(rs[-1].calls),
            "stored_bytes": stored, "stored_ratio": stored / total if stored is not None else None,
            "peak_rss_mib": max(r.rss_kib for r in rs) / 1024,
        }
        if len(rs[-1].calls) > 1:
            # throughput of the single largest call, without per-call start-up
            sizes_by_call = [p.stat().st_size for p in sets[t.input_kind]]
            if len(sizes_by_call) == len(rs[-1].calls):
                k = max(range(len(sizes_by_call)), key=sizes_by_call.__getitem__)
                row["largest_call_mb_per_s"] = sizes_by_call[k] / min(r.calls[k] for r in rs) / MB
        rows.append(row)
    for row in rows:
        ref = next((r for r in rows if r["tool"] == ("layerstore" if row["input"] == "layers" else "layerstore-load")), None)
        if ref and ref is not row:
            row["speed_vs_layerstore"] = row["mb_per_s"] / ref["mb_per_s"]
            if row["stored_bytes"] is not None:
                row["stored_vs_layerstore"] = row["stored_bytes"] / ref["stored_bytes"]
    return rows


def table(rows) -> str:
    head = ["tool", "input", "MB/s", "largest call MB/s", "stored bytes", "stored / input", "speed ÷ layerstore",
            "stored ÷ layerstore", "peak RSS MiB"]

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["tool"], r["input"], f(r["mb_per_s"], ".1f"), f(r.get("largest_call_mb_per_s"), ".1f"),
            f(r["stored_bytes"], ","), f(r["stored_ratio"], ".3f"), f(r.get("speed_vs_layerstore"), ".2f"),
            f(r.get("stored_vs_layerstore"), ".2f"), f(r["peak_rss_mib"], ".1f"),
        ]) + " |")
    lines.append("")
    lines.extend(f"- {r['tool']}: {r['version']}" for r in rows)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
