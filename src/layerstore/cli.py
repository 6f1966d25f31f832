"""The ``layerstore`` command: the docker image commands an operator knows
(load, save, import, images, tag, rmi, inspect, history, prune, system df),
store maintenance (repack, fsck, blobs) and filesystem views of images
(ls, cat, export, diff, layers), over a store directory.

Run ``layerstore --help`` or ``layerstore COMMAND --help``; every command's
help ends with an example. Also runnable as ``python -m layerstore``.

Output: tables for people; ``--format json`` (global, or on each listing
command) for scripts; ``--quiet`` prints only what a script needs (IDs,
names) and no progress. Progress bars (bytes, rate, ETA) go to stderr,
only when stderr is a terminal.

Errors: one line on stderr, ``layerstore: error: <what>: <why>``, and an
exit code from :data:`EXIT_CODES` (``--debug`` shows the traceback
instead).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import click

from . import __version__, errors, formats, views
from . import mediatypes as mt
from .errors import LayerStoreError
from .gc import ImageInUseError, StoreBusyError
from .manifest import ImageIndex, Manifest, parse_document
from .reference import parse, parse_normalized
from .store import Store, default_store_path

__all__ = ["main", "cli", "EXIT_CODES", "exit_code_for"]

# --- exit codes ---------------------------------------------------------------------------

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INVALID = 4
EXIT_CORRUPT = 5
EXIT_REFUSED = 6
EXIT_IO = 7
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141

#: code -> meaning; the table README.md and ``layerstore --help`` show.
EXIT_CODES: Dict[int, str] = {
    EXIT_OK: "success",
    EXIT_ERROR: "any other failure",
    EXIT_USAGE: "bad command line (unknown command or option, missing argument)",
    EXIT_NOT_FOUND: "not found: image, tag, platform, blob, path in an image, or input file",
    EXIT_INVALID: "invalid input: malformed archive, document, tar, reference, digest or platform; "
                  "a path of the wrong type",
    EXIT_CORRUPT: "the store is damaged or unusable; fsck found problems it did not repair",
    EXIT_REFUSED: "refused: the image is in use (rmi without --force), or the store is busy (another "
                  "prune, repack or repair) or a pack locked",
    EXIT_IO: "operating system error on a file (permission, disk full, ...)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_PIPE: "output closed early (a reader such as `head` stopped reading)",
}

def exit_code_for(exc: BaseException) -> int:
    """The exit code for an error (see :data:`EXIT_CODES`)."""
    if isinstance(exc, (click.UsageError, errors.CodecMismatchError)):
        return EXIT_USAGE  # a codec mismatch: --codec names another codec than the store's
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return EXIT_PIPE
    if isinstance(exc, (ImageInUseError, StoreBusyError, errors.PackLockedError)):
        return EXIT_REFUSED
    if isinstance(exc, (views.PathNotFoundError, errors.ImageNotFoundError, errors.BlobNotFoundError,
                        errors.PlatformNotFoundError, FileNotFoundError)):
        return EXIT_NOT_FOUND
    if isinstance(exc, (errors.ImageFormatError, errors.InvalidDocumentError, errors.TarFormatError,
                        errors.CompressedLayerError, errors.DigestError, errors.ReferenceError,
                        errors.PlatformError, errors.DigestMismatchError, errors.SizeMismatchError,
                        views.ViewError, NotADirectoryError, IsADirectoryError)):
        return EXIT_INVALID
    if isinstance(exc, (errors.CorruptBlobError, errors.PackFormatError, errors.StoreError)):
        return EXIT_CORRUPT
    if isinstance(exc, OSError):
        return EXIT_IO
    return EXIT_ERROR


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror[0].lower() + exc.strerror[1:]
        if exc.filename is not None:
            text += f" ({exc.filename})"
        return text
    text = (str(exc) or type(exc).__name__).strip()
    return text.splitlines()[0].rstrip(":") if text else text


# --- state, store, output --------------------------------------------------------------------

class _CliStore(Store):
    """A Store whose blob reads (``open_blob``) and batch ingests report the
    bytes they read to ``meter`` (a callable taking a byte count) while it
    is set; this is how the progress bars of load, save and export are
    fed."""

    meter: Optional[Callable[[int], None]] = None

    def batch(self):
        b = super().batch()
        ingest = b.ingest

        def metered_ingest(source, **kwargs):
            if self.meter is not None and hasattr(source, "readinto"):
                source = views.MeteredReader(source, self.meter)
            return ingest(source, **kwargs)

        b.ingest = metered_ingest
        return b

    def open_blob(self, digest: str):
        f = super().open_blob(digest)
        return views.MeteredReader(f, self.meter) if self.meter is not None else f


class State:
    """Global options and the store of one invocation."""

    def __init__(self):
        self.store_path: Optional[str] = None
        self.codec: Optional[str] = None
        self.format = "table"
        self.quiet = False
        self.debug = False
        self.what = "layerstore"
        self._store: Optional[_CliStore] = None

    def doing(self, *what: Any):
        """Name the operation for error messages: ``doing("load", path)``."""
        self.what = " ".join(str(w) for w in what if w is not None and w != "")

    def store(self) -> _CliStore:
        if self._store is None:
            path = Path(self.store_path) if self.store_path else default_store_path()
            what = self.what
            self.doing("open store", path)
            self._store = _CliStore.open(path, codec=self.codec)
            self.what = what
        return self._store

    def close(self):
        if self._store is not None:
            store, self._store = self._store, None
            store.close()

    @property
    def progress_wanted(self) -> bool:
        try:
            return not self.quiet and sys.stderr.isatty()
        except (AttributeError, ValueError):
            return False

    def fmt(self, local: Optional[str]) -> str:
        return local or self.format


class _Bar:
    """A progress bar (bytes, rate, ETA) on stderr, or nothing when
    progress is not wanted. ``total`` may grow with :meth:`grow`."""

    def __init__(self, state: State, desc: str, total: Optional[int]):
        self._bar = None
        if state.progress_wanted:
            from tqdm import tqdm

            try:
                width = os.get_terminal_size(sys.stderr.fileno()).columns
            except (OSError, ValueError):
                width = 0
            # bytes done/total, elapsed<ETA, rate (tqdm leaves the unit off the counts);
            # a terminal that reports no width (0 columns) gets 80
            fmt = "{l_bar}{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}]" if total else None
            self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1000,
                             file=sys.stderr, leave=False, mininterval=0.1, bar_format=fmt,
                             dynamic_ncols=width > 0, ncols=None if width > 0 else 80)

    def update(self, n: int):
        if self._bar is not None:
            self._bar.update(n)

    def grow(self, n: int):
        if self._bar is not None:
            self._bar.total = (self._bar.total or 0) + n
            self._bar.refresh()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()


class _metered:
    """``with _metered(state, "load", total) as bar``: a bar fed by the
    store's reads and ingests for the duration of the block."""

    def __init__(self, state: State, desc: str, total: Optional[int]):
        self.state = state
        self.bar = _Bar(state, desc, total)

    def __enter__(self) -> _Bar:
        self.bar.__enter__()
        self.state.store().meter = self.bar.update if self.bar._bar is not None else None
        return self.bar

    def __exit__(self, *exc):
        self.state.store().meter = None
        self.bar.__exit__(*exc)


class _ReadMeter:
    """Feeds a bar with the bytes this process reads from files (``rchar``
    of ``/proc/self/io``, sampled five times a second), for store
    operations that read their own files (fsck, repack). Does nothing
    where that file is absent."""

    _PATH = "/proc/self/io"

    def __init__(self, bar: _Bar):
        self.bar = bar
        self._stop = threading.Event()
        self._thread = None
        self._last = self._read()
        if bar._bar is not None and self._last is not None:
            self._thread = threading.Thread(target=self._run, name="layerstore-progress", daemon=True)

    def _read(self) -> Optional[int]:
        try:
            with open(self._PATH) as f:
                for line in f:
                    if line.startswith("rchar:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def _run(self):
        while not self._stop.wait(0.2):
            now = self._read()
            if now is not None and now > self._last:
                self.bar.update(now - self._last)
                self._last = now

    def __enter__(self):
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()


def _jsonable(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"cannot show {type(obj).__name__} as JSON")


def _print_json(obj):
    click.echo(json.dumps(obj, default=_jsonable, indent=2, ensure_ascii=False))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[int] = ()):
    """Print aligned columns, three spaces apart, as docker does;
    ``right``: indexes of right-aligned columns."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            last = i == len(cells) - 1
            if i in right:
                out.append(c.rjust(widths[i]))
            else:
                out.append(c if last else c.ljust(widths[i]))
        return "   ".join(out).rstrip()

    click.echo(line(headers))
    for r in rows:
        click.echo(line(r))


def human_size(n: Optional[int]) -> str:
    """Bytes as docker shows them: decimal units, three significant
    digits (``2.14MB``, ``33.3kB``, ``0B``)."""
    if n is None:
        return "N/A"
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    v, i = float(n), 0
    while i < len(units) - 1 and float(f"{v:.3g}") >= 1000:
        v /= 1000
        i += 1
    return f"{v:.3g}{units[i]}"


def _parse_time(text: Optional[str]) -> Optional[float]:
    """Seconds since the epoch of an RFC 3339 time (any fraction digits)."""
    if not text:
        return None
    s = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "T" not in s and " " in s:
        s = s.replace(" ", "T", 1)
    head, _, rest = s.partition(".")
    if rest:
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        s = head + "." + (digits[:6] or "0") + rest
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def human_duration(seconds: float) -> str:
    """How long ago, as docker says it (go-units ``HumanDuration``)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(round(seconds / 3600))
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // 3600) // 24 // 365} years"


def _ago(created: Optional[str]) -> str:
    ts = _parse_time(created)
    if ts is None:
        return "N/A"
    return human_duration(max(0.0, time.time() - ts)) + " ago"


def _short(d: Optional[str], no_trunc: bool = False) -> str:
    if not d:
        return "<none>"
    if no_trunc:
        return str(d)
    return str(d).split(":", 1)[-1][:12]


def _familiar(repository: str, tag: Optional[str] = None) -> str:
    ref = parse(f"{repository}:{tag or 'latest'}")
    return ref.familiar() if tag else ref.familiar_name()


# --- the command group -----------------------------------------------------------------------

def _exit_code_epilog() -> str:
    lines = ["\b", "Exit codes:"]
    lines += [f"  {code:>3}  {text}" for code, text in EXIT_CODES.items()]
    lines += ["", "\b", "Example:", "  layerstore --store /tmp/store load -i image.tar",
              "  layerstore --store /tmp/store images"]
    return "\n".join(lines)


class _OutputClosed(Exception):
    """The reader of stdout went away (click turns a broken pipe into exit
    status 1; this keeps it apart)."""


class _Group(click.Group):
    def list_commands(self, ctx):
        return list(self.commands)  # in definition order, grouped as docker lists them

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise _OutputClosed() from exc


@click.group(cls=_Group, epilog=_exit_code_epilog(), context_settings={"help_option_names": ["-h", "--help"],
                                                                         "max_content_width": 100})
@click.option("--store", "store_path", metavar="PATH",
              help="Store directory (default: $LAYERSTORE_PATH, else $XDG_DATA_HOME/layerstore, "
                   "else ~/.local/share/layerstore).")
@click.option("--codec", type=click.Choice(["lz4", "zstd", "none"]), default=None,
              help="Compression of the chunks of a new store (default lz4; zstd keeps about a fifth fewer "
                   "bytes). Fixed when the store is created; an existing store refuses a different one.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output of listing commands: a table for people or JSON for scripts.")
@click.option("-q", "--quiet", is_flag=True, help="Print only IDs or names; no progress bars.")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.version_option(__version__, "--version", prog_name="layerstore", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx, store_path, codec, fmt, quiet, debug):
    """A content-addressed, deduplicating store for container image
    layers: load, save and inspect images as docker does, look inside
    them without a container, and keep the store healthy."""
    state: State = ctx.ensure_object(State)
    state.store_path = store_path
    state.codec = codec
    state.format = fmt
    state.quiet = quiet
    state.debug = debug
    ctx.call_on_close(state.close)


def _format_option(f):
    return click.option("--format", "fmt", type=click.Choice(["table", "json"]), default=None,
                        help="Output: table (default: the global --format) or json.")(f)


def _quiet_option(f):
    def set_quiet(ctx, _param, value):
        if value:
            ctx.ensure_object(State).quiet = True
        return value

    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=set_quiet,
                        help="Print only IDs or names (as the global --quiet).")(f)


def _platform_option(f):
    return click.option("--platform", metavar="OS/ARCH[/VARIANT]", default=None,
                        help="Platform to pick from a multi-platform image (default: this machine's).")(f)


pass_state = click.make_pass_decorator(State, ensure=True)


# --- images: load, save, import -----------------------------------------------------------------

def _input_size(path: str) -> Optional[int]:
    p = Path(path)
    try:
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return p.stat().st_size
    except OSError:
        return None


@cli.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("-i", "--input", "inputs", multiple=True, metavar="PATH",
              help="Archive or layout to read (repeatable; same as a PATH argument).")
@click.option("--name", metavar="REPOSITORY[:TAG]",
              help="Name for images the input does not name fully (an OCI ref.name that is only a tag, "
                   "a dir: layout, an unnamed docker-archive image).")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Import only this platform of image indexes (repeatable; default all).")
@_format_option
@_quiet_option
@pass_state
def load(state: State, paths, inputs, name, platforms, fmt):
    """Load images from archives or layouts.

    Reads docker-archive, oci-archive, OCI image layout and skopeo dir:
    inputs, and prints each layer as "stored" or "already exists" with its
    size, then the names loaded.

    \b
    Example:
      layerstore load -i ../shared/corpus/images/small-amd64.podman.docker-archive.tar
    """
    sources = list(inputs) + list(paths)
    if not sources:
        raise click.UsageError("no input given: name an archive or layout (PATH or -i PATH)")
    store = state.store()
    results = []
    for src in sources:
        state.doing("load", src)
        if not os.path.lexists(src):
            raise FileNotFoundError(2, "No such file or directory", src)
        with _metered(state, f"load {Path(src).name}", _input_size(src)):
            loaded = store.load(src, name=name, platforms=list(platforms) or None)
        results.append((src, loaded))
        if state.fmt(fmt) == "table":
            for image in loaded:
                _print_loaded(state, image)
    if state.fmt(fmt) == "json":
        _print_json([{"input": src, "images": loaded} for src, loaded in results])


def _print_loaded(state: State, image, indent: str = ""):
    if not state.quiet:
        for layer in image.layers:
            click.echo(f"{indent}{layer.digest.short}: {layer.status} ({human_size(layer.size)})")
        for child in image.manifests:
            click.echo(f"{indent}{child.platform or child.digest.short}:")
            _print_loaded(state, child, indent + "  ")
        for missing in image.missing:
            click.echo(f"{indent}{missing}: not in the input")
    if indent:
        return
    if image.references:
        for ref in image.references:
            click.echo(f"Loaded image: {_familiar_ref(ref)}")
        return
    if image.config_digest:
        click.echo(f"Loaded image ID: {image.config_digest}")
    else:
        click.echo(f"Loaded image: {image.digest}")
    if not state.quiet:
        click.echo("  (no tag: the input names none in full; prune removes untagged images; "
                   "give --name REPOSITORY to tag it)", err=True)


def _familiar_ref(ref: str) -> str:
    return parse(ref).familiar()


def _closure_size(store, digest: str, seen: set) -> int:
    """Bytes of every blob an image, manifest or index references (and its
    own), each counted once; what ``save`` writes."""
    if digest in seen or not store.has(digest):
        return 0
    seen.add(digest)
    info = store.stat(digest)
    total = info.size
    if not (mt.is_manifest(info.media_type) or mt.is_index(info.media_type)):
        return total
    doc = parse_document(store.read_blob(digest), info.media_type)
    if isinstance(doc, ImageIndex):
        for child in doc.manifests:
            total += _closure_size(store, str(child.digest), seen)
    elif isinstance(doc, Manifest):
        for d in (doc.config, *doc.layers):
            if str(d.digest) not in seen and store.has(d.digest):
                seen.add(str(d.digest))
                total += store.stat(d.digest).size
    return total


@cli.command()
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("-o", "--output", required=True, metavar="PATH", help="File (or directory, for oci) to write.")
@click.option("--format", "archive_format", type=click.Choice(list(formats.EXPORT_FORMATS)),
              default=formats.DOCKER_ARCHIVE, show_default=True,
              help="docker-archive or oci-archive (tar files), or oci (an OCI image layout directory).")
@_platform_option
@pass_state
def save(state: State, images, output, archive_format, platform):
    """Save images to an archive or an OCI layout.

    IMAGE is a tag, digest or image ID. Blobs are written byte-exact; the
    output appears complete or not at all.

    \b
    Example:
      layerstore save -o small.tar localhost/corpus/small:1.0-amd64
      layerstore save --format oci-archive -o small.oci.tar localhost/corpus/small:1.0-amd64
    """
    store = state.store()
    state.doing("save", "-o", output)
    if not Path(output).parent.is_dir():
        raise FileNotFoundError(2, "No such directory", str(Path(output).parent))
    seen: set = set()
    total = 0
    for ref in images:
        state.doing("save", ref)
        if archive_format == formats.DOCKER_ARCHIVE or platform is not None:
            total += _closure_size(store, str(store.resolve(ref, platform).digest), seen)
        else:
            total += _closure_size(store, str(store._lookup(ref)[0]), seen)  # the whole index
    state.doing("save", "-o", output)
    with _metered(state, f"save {Path(output).name}", total):
        store.save(list(images), output, format=archive_format, platform=platform)


@cli.command(name="import")
@click.argument("source", metavar="SOURCE")
@click.argument("reference", metavar="REPOSITORY[:TAG]")
@click.option("-m", "--message", default="", help="Comment of the image's history step.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", default=None,
              help="Platform the image declares (default: this machine's).")
@click.option("--timestamp", type=int, default=None, metavar="SECONDS",
              help="Creation time, seconds since the epoch (default: $SOURCE_DATE_EPOCH, else 0), "
                   "so the same input gives the same image ID.")
@_format_option
@pass_state
def import_(state: State, source, reference, message, platform, timestamp, fmt):
    """Create a one-layer image from a directory or a tar.

    As docker import does: SOURCE is a directory or a flat tar (plain,
    gzip or zstd), stored as the image's one layer; the image is tagged
    REPOSITORY[:TAG] and its image ID printed.

    \b
    The config and manifest are built deterministically: the same files,
    platform, timestamp and message give the same image ID.

    \b
    Example:
      layerstore export localhost/corpus/small:1.0-amd64 -o rootfs.tar
      layerstore import rootfs.tar localhost/flat:1.0
    """
    state.doing("import", source)
    if timestamp is None:
        env = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
        try:
            timestamp = int(env) if env else 0
        except ValueError:
            raise click.UsageError(f"SOURCE_DATE_EPOCH={env!r} is not a number of seconds") from None
    image = views.import_rootfs(state.store(), source, reference, platform=platform, created=timestamp,
                                message=message)
    if state.fmt(fmt) == "json":
        _print_json(image)
    else:
        click.echo(str(image.config_digest))


# --- images: list, tag, remove, inspect, history ---------------------------------------------------

@cli.command()
@click.argument("repository", required=False)
@click.option("-f", "--filter", "filters", multiple=True, metavar="dangling=true|false",
              help="Show only dangling (untagged) images, or only tagged ones.")
@click.option("--digests", is_flag=True, help="Show the manifest or index digest each tag points to.")
@click.option("--no-trunc", is_flag=True, help="Show full IDs.")
@_format_option
@_quiet_option
@pass_state
def images(state: State, repository, filters, digests, no_trunc, fmt):
    """List images.

    As docker images does: repository, tag, image ID, created, size (of
    the uncompressed layers); one line per tag and per dangling image.

    \b
    Example:
      layerstore images
      layerstore images --format json localhost/corpus/small
    """
    state.doing("images", repository)
    dangling = None
    for f in filters:
        key, _, value = f.partition("=")
        if key != "dangling" or value.lower() not in ("true", "false", "1", "0"):
            raise click.UsageError(f"unsupported filter {f!r}: only dangling=true|false")
        dangling = value.lower() in ("true", "1")
    rows = state.store().images(dangling=dangling)
    if repository:
        name = parse_normalized(repository).name
        rows = [r for r in rows if r.repository == name]
    if state.fmt(fmt) == "json":
        _print_json(rows)
        return
    if state.quiet:
        for image_id in dict.fromkeys(_short(r.id, no_trunc) for r in rows):
            click.echo(image_id)
        return
    headers = ["REPOSITORY", "TAG"] + (["DIGEST"] if digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    table = []
    for r in rows:
        repo = _familiar(r.repository) if r.repository else "<none>"
        line = [repo, r.tag or "<none>"]
        if digests:
            line.append(str(r.digest))
        line += [_short(r.id, no_trunc), _ago(r.created), human_size(r.size)]
        table.append(line)
    _table(headers, table)


@cli.command()
@click.argument("source", metavar="SOURCE_IMAGE")
@click.argument("target", metavar="TARGET_IMAGE[:TAG]")
@pass_state
def tag(state: State, source, target):
    """Tag an image.

    Points the tag TARGET_IMAGE at SOURCE_IMAGE (a tag, digest or image
    ID); copies nothing, and the move is kept in the tag's history.

    \b
    Example:
      layerstore tag localhost/corpus/small:1.0-amd64 busybox:stable
    """
    state.doing("tag", source, target)
    state.store().tag(source, target)


def _render_report(state: State, report, fmt: Optional[str], title: Optional[str] = None):
    """Show a lifecycle report (a dataclass or mapping): JSON, or one
    ``Field: value`` line per field (sizes in bytes also in docker units),
    lists one item per line."""
    if state.fmt(fmt) == "json":
        _print_json(report)
        return
    data = _jsonable(report) if not isinstance(report, dict) else report
    if title:
        click.echo(title)
    for key, value in data.items():
        label = key.replace("_", " ").capitalize()
        if isinstance(value, (list, tuple)):
            click.echo(f"{label}: {len(value)}")
            for item in value:
                click.echo(f"  {_item_text(item)}")
        elif isinstance(value, int) and not isinstance(value, bool) and ("bytes" in key or key.endswith("size")):
            click.echo(f"{label}: {human_size(value)} ({value} B)")
        elif isinstance(value, float) and ("ratio" in key or "fraction" in key):
            click.echo(f"{label}: {value:.2f}")
        elif dataclasses.is_dataclass(value) or isinstance(value, dict):
            click.echo(f"{label}: {json.dumps(value, default=_jsonable, sort_keys=True)}")
        else:
            click.echo(f"{label}: {value}")


def _item_text(item) -> str:
    if isinstance(item, (str, int, float)):
        return str(item)
    data = _jsonable(item) if not isinstance(item, dict) else item
    return "  ".join(f"{k}={v}" for k, v in data.items())


@cli.command()
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("-f", "--force", is_flag=True, help="Remove an image by digest or ID even when tags or an "
                                                   "index still need it.")
@_format_option
@_quiet_option
@pass_state
def rmi(state: State, images, force, fmt):
    """Remove images.

    As docker rmi does: a tag is removed, and the image with it when that
    was its last tag and nothing else needs it. prune and repack give the
    space back.

    \b
    Example:
      layerstore rmi localhost/corpus/small:1.0-arm64
    """
    remove = state.store().remove
    reports = []
    for ref in images:
        state.doing("rmi", ref)
        reports.append(remove(ref, force=force))
    if state.fmt(fmt) == "json":
        _print_json(reports)
        return
    for report in reports:
        for name in getattr(report, "untagged", ()):
            click.echo(f"Untagged: {name}")
        for digest in getattr(report, "deleted", ()):
            click.echo(f"Deleted: {digest}")


@cli.command()
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@_platform_option
@_format_option
@pass_state
def inspect(state: State, images, platform, fmt):
    """Show images' details as JSON.

    What docker image inspect shows, as a JSON array: Id, RepoTags,
    RepoDigests, Created, Config, Architecture, Os, Size, RootFS, ...
    (JSON whatever --format says.)

    \b
    Example:
      layerstore inspect localhost/corpus/small:1.0-amd64
    """
    out = []
    for ref in images:
        state.doing("inspect", ref)
        out.append(state.store().inspect(ref, platform))
    _print_json(out)


@cli.command()
@click.argument("image")
@click.option("--no-trunc", is_flag=True, help="Do not cut IDs and commands.")
@click.option("-H", "--human", type=bool, default=True, show_default=True,
              help="Sizes and dates in human-readable form.")
@_platform_option
@_format_option
@_quiet_option
@pass_state
def history(state: State, image, no_trunc, human, platform, fmt):
    """Show an image's history.

    As docker history does: newest step first, each step's command and
    the size of the layer it created.

    \b
    Example:
      layerstore history localhost/corpus/small:1.0-amd64
    """
    state.doing("history", image)
    steps = state.store().history(image, platform)
    if state.fmt(fmt) == "json":
        _print_json(steps)
        return
    if state.quiet:
        for s in steps:
            click.echo(s.id if no_trunc or s.id == "<missing>" else _short(s.id))
        return
    rows = []
    for s in steps:
        created_by = s.created_by.replace("\n", " ")
        if not no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append([s.id if (no_trunc or s.id == "<missing>") else _short(s.id),
                     _ago(s.created) if human else (s.created or ""),
                     created_by, human_size(s.size) if human else s.size, s.comment])
    _table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], rows)


# --- store maintenance -------------------------------------------------------------------------------

@cli.command()
@click.option("-v", "--verbose", is_flag=True, help="Also show each image's unique and shared bytes.")
@_format_option
@pass_state
def df(state: State, verbose, fmt):
    """Show disk usage.

    What docker system df shows (images: total, active, size,
    reclaimable), and what only a deduplicating store can say: logical,
    unique and stored bytes, dedup and compression ratios.

    \b
    Example:
      layerstore df
      layerstore df --format json
    """
    state.doing("df")
    store = state.store()
    usage = store.df()
    if state.fmt(fmt) == "json":
        _print_json(usage)
        return
    _table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
           [["Images", usage.images, usage.active, human_size(usage.size),
             f"{human_size(usage.reclaimable)} ({usage.reclaimable_percent:.0f}%)"]])
    if not state.quiet:
        click.echo("")
        click.echo(f"Blobs: {usage.blobs}, chunks: {usage.chunks}")
        click.echo(f"Logical bytes: {human_size(usage.logical_bytes)} (what reading every blob returns)")
        click.echo(f"Unique bytes: {human_size(usage.unique_bytes)} (distinct content)")
        click.echo(f"Stored bytes: {human_size(usage.stored_bytes)} (after {store.codec} compression)")
        click.echo(f"Dedup ratio: {usage.dedup_ratio:.2f}x, compression ratio: {usage.compression_ratio:.2f}x")
        click.echo(f"Packs: {usage.pack_files} files, {human_size(usage.pack_bytes)} "
                   f"({human_size(usage.dead_pack_bytes)} dead); catalog: {human_size(usage.catalog_bytes)}")
        if usage.layers_not_deduplicated:
            click.echo(f"Layers held as they came: {usage.layers_not_deduplicated} "
                       f"({human_size(usage.not_deduplicated_bytes)} of tar; compact deduplicates them)")
        if usage.to_compress_bytes:
            click.echo(f"Stored uncompressed by compact of gzip/zstd layers: {human_size(usage.to_compress_bytes)} "
                       f"(repack compresses them)")
    if verbose:
        click.echo("")
        _table(["DIGEST", "TAGS", "SIZE", "UNIQUE", "SHARED"],
               [[_short(u.digest), ", ".join(u.tags) or "<none>", human_size(u.size), human_size(u.unique_bytes),
                 human_size(u.shared_bytes)] for u in usage.per_image])


@cli.command()
@click.option("-a", "--all", "all_", is_flag=True,
              help="Remove every image without a tag, not only dangling ones (docker image prune -a).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@_format_option
@_quiet_option
@pass_state
def prune(state: State, all_, dry_run, fmt):
    """Remove unused images and blobs.

    Removes dangling images (with -a: every image without a tag) and the
    blobs nothing references, and says how many bytes that reclaims;
    repack gives them back to the disk.

    \b
    Example:
      layerstore prune --dry-run
      layerstore prune -a
    """
    state.doing("prune")
    report = state.store().prune(all=all_, dry_run=dry_run)
    if state.fmt(fmt) == "json":
        _print_json(report)
        return
    verb = "Would delete" if dry_run else "Deleted"
    if report.images:
        click.echo(f"{verb} images:")
        for d in report.images:
            click.echo(f"  {d}")
    if (report.blobs or report.chunks) and not state.quiet:
        click.echo(f"{verb} blobs: {len(report.blobs)}; chunks: {report.chunks}")
    for problem in report.problems:
        click.echo(f"Left in place: {problem}")
    what = "Total reclaimable space" if dry_run else "Total reclaimed space"
    click.echo(f"{what}: {human_size(report.reclaimed_bytes)} (repack returns it to the disk)")
    if report.deferred:
        click.echo("Some work was deferred while other operations finished; run prune again later.")


@cli.command()
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, metavar="FRACTION",
              help="Rewrite packs whose dead fraction is at least this (default: the store's).")
@_format_option
@pass_state
def repack(state: State, threshold, fmt):
    """Give the space of pruned data back to the disk.

    Rewrites packs holding dead chunks, moving only live ones, and packs
    holding the files of gzip/zstd layers, which ingest leaves
    uncompressed (they are compressed now), then deletes the old packs.
    Safe to interrupt.

    \b
    Example:
      layerstore prune
      layerstore repack --threshold 0
    """
    state.doing("repack")
    fn = state.store().repack
    kwargs = {} if threshold is None else {"threshold": threshold}
    packs = state.store().root / "packs"
    total = sum(p.stat().st_size for p in packs.glob("*.pack")) if packs.is_dir() else None
    with _Bar(state, "repack", total) as bar, _ReadMeter(bar):
        report = fn(**kwargs)
    if state.fmt(fmt) == "json":
        _print_json(report)
        return
    click.echo(f"Packs rewritten: {len(report.packs_rewritten)} of {report.packs_considered}; "
               f"written: {len(report.packs_written)}; deleted: {len(report.packs_deleted)}")
    click.echo(f"Chunks moved: {report.chunks_moved} ({human_size(report.bytes_moved)})")
    if report.chunks_compressed:
        click.echo(f"Chunks compressed on the way (compact of gzip/zstd layers had left them uncompressed): "
                   f"{report.chunks_compressed}")
    click.echo(f"Reclaimed: {human_size(report.reclaimed_bytes)} ({human_size(report.bytes_before)} -> "
               f"{human_size(report.bytes_after)}) in {report.seconds:.1f}s")
    for problem in report.problems:
        click.echo(f"Left in place: {problem}")
    if report.deferred:
        click.echo("Some old packs are kept until readers finish; run repack again later.")


@cli.command()
@_format_option
@pass_state
def compact(state: State, fmt):
    """Deduplicate compressed layers and hold them once.

    A gzip or zstd layer is ingested as its compressed bytes. compact first
    deduplicates each such layer's files against the rest of the store,
    then re-stores the compressed blob as the small data that rebuilds it
    bit-exactly from the layer, proving each by rebuilding it before the
    swap. prune then repack give the space back to the disk.

    \b
    Example:
      layerstore compact
      layerstore prune && layerstore repack
    """
    state.doing("compact")
    report = state.store().compact()
    if state.fmt(fmt) == "json":
        _print_json(report)
        return
    if not report.examined and not report.skipped and not report.deduplicated:
        click.echo("Nothing to compact: no gzip or zstd layer blob is held as its compressed bytes.")
        return
    if report.deduplicated:
        click.echo(f"Layers deduplicated: {len(report.deduplicated)} ({human_size(report.layer_bytes)} of tar, "
                   f"{human_size(report.content_bytes_written)} of new file content written)")
    click.echo(f"Compressed blobs rebuilt from their layer: {len(report.rebuilt)} of {report.examined} "
               f"({human_size(report.blob_bytes)} now held as {human_size(report.data_bytes)} of reconstruction data)")
    for digest, why in report.skipped:
        click.echo(f"Left as it was: {digest}: {why}")
    if report.rebuilt:
        click.echo("Run prune, then repack, to give the space back to the disk.")


def _blob_rows(store):
    """The BlobInfo of every stored blob, sorted by digest (read from the
    catalog: Store has no public listing of blobs)."""
    for row in store._catalog.iter_blobs():
        yield store.stat(row[0])


@cli.command()
@click.option("--repair", is_flag=True,
              help="Drop what cannot be recovered (and every image it breaks), keeping all good data.")
@_format_option
@_quiet_option
@pass_state
def fsck(state: State, repair, fmt):
    """Check the whole store.

    Re-hashes every chunk and blob and reports each corrupt or missing
    object. Exit code 5 when problems remain.

    \b
    Example:
      layerstore fsck
      layerstore fsck --repair
    """
    state.doing("fsck")
    store = state.store()
    packs = store.root / "packs"
    pack_bytes = sum(p.stat().st_size for p in packs.glob("*.pack")) if packs.is_dir() else 0
    # verify reads every pack, then every chunk row, then every blob's chunks
    with _Bar(state, "fsck", 3 * pack_bytes or None) as bar, _ReadMeter(bar):
        report = store.verify(repair=repair)
    remaining = list(report.faults)
    if repair and remaining:
        state.doing("fsck", "(checking the repair)")
        with _Bar(state, "fsck", 3 * pack_bytes or None) as bar, _ReadMeter(bar):
            remaining = list(store.verify().faults)
    if state.fmt(fmt) == "json":
        data = _jsonable(report)
        data["ok"] = not remaining
        data["remaining"] = [str(f) for f in remaining]
        _print_json(data)
    else:
        for fault in report.faults:
            click.echo(str(fault))
        for action in report.repairs:
            click.echo(f"repaired: {action}")
        if not state.quiet:
            click.echo(f"checked {report.packs_checked} packs, {report.chunks_checked} chunks, "
                       f"{report.blobs_checked} blobs ({human_size(report.bytes_checked)}), "
                       f"{report.images_checked} images: "
                       + ("ok" if not report.faults else f"{len(report.faults)} faults"
                          + (f", {len(remaining)} remain after repair" if repair else "")))
    return EXIT_CORRUPT if remaining else EXIT_OK


@cli.group()
def blobs():
    """List stored blobs or read one.

    \b
    Example:
      layerstore blobs ls
      layerstore blobs cat sha256:03cdb4d5... > layer.tar
    """


@blobs.command(name="ls")
@_format_option
@_quiet_option
@pass_state
def blobs_ls(state: State, fmt):
    """List stored blobs.

    Digest, kind (layer, gzip, zstd, raw), size in bytes, media type, and
    for compressed layers the diff ID.

    \b
    Example:
      layerstore blobs ls --format json
    """
    state.doing("blobs ls")
    rows = list(_blob_rows(state.store()))
    if state.fmt(fmt) == "json":
        _print_json([{"digest": i.digest, "size": i.size, "media_type": i.media_type, "kind": i.kind,
                      "diff_id": i.diff_id, "entries": i.entries} for i in rows])
        return
    if state.quiet:
        for i in rows:
            click.echo(i.digest)
        return
    _table(["DIGEST", "KIND", "SIZE", "MEDIA TYPE", "DIFF ID"],
           [[i.digest, i.kind, i.size, i.media_type, i.diff_id if i.diff_id and i.diff_id != i.digest else ""]
            for i in rows], right=[2])


def _open_output(output: Optional[str], what: str):
    """(binary file, commit, abort): ``output`` written as a temporary file
    renamed into place on commit, or stdout when None (refused on a
    terminal)."""
    if output is None or output == "-":
        out = click.get_binary_stream("stdout")
        if output is None and out.isatty():
            raise click.UsageError(f"refusing to write {what} to a terminal; use -o FILE or redirect the output")
        return out, out.flush, lambda: None
    path = Path(output)
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(2, "No such directory", str(path.parent))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=str(path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    f = os.fdopen(fd, "wb")

    def commit():
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)

    def abort():
        f.close()
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass

    return f, commit, abort


@blobs.command(name="cat")
@click.argument("digest")
@click.option("-o", "--output", metavar="FILE",
              help="Write to FILE (default: stdout, refused when it is a terminal; -o - writes there anyway).")
@pass_state
def blobs_cat(state: State, digest, output):
    """Stream a blob's raw bytes.

    Written to stdout or FILE, verified as they are read.

    \b
    Example:
      layerstore blobs cat sha256:b712967c1e19f5ef57c137b4df4f2c2196799ae64d83b3659f5769dd0ef61105
    """
    state.doing("blobs cat", digest)
    store = state.store()
    src = store.open_blob(digest)
    out, commit, abort = _open_output(output, "a blob")
    try:
        with src:
            while True:
                buf = src.read(1 << 20)
                if not buf:
                    break
                out.write(buf)
        commit()
    except BaseException:
        abort()
        raise


@blobs.command(name="info")
@click.argument("digest")
@_format_option
@pass_state
def blobs_info(state: State, digest, fmt):
    """Show a blob's details.

    Its descriptor; for a layer, its entries, chunks and the bytes it
    shares with other blobs; for a gzip or zstd layer blob, whether its
    compressed bytes are kept or it is rebuilt from its layer (compact).

    \b
    Example:
      layerstore blobs info sha256:03cdb4d57283cf828c0e460530f9285ae982604e4958603804ed44dc3542f5e5
    """
    state.doing("blobs info", digest)
    store = state.store()
    info = store.stat(digest)
    out = {"digest": info.digest, "size": info.size, "media_type": info.media_type, "kind": info.kind,
           "diff_id": info.diff_id, "entries": info.entries}
    if info.kind == "layer":
        layer = store.layer_info(digest)
        out.update({k: v for k, v in _jsonable(layer).items() if k not in out})
    elif info.kind in ("gzip", "zstd"):
        _row, rec = store._recipe(digest)
        out["stored_as"] = "reconstruction data, rebuilt from its layer" if rec.source else "its compressed bytes"
        if rec.source:
            out["reconstruction_data_bytes"] = rec.data_size
    _render_report(state, out, fmt)


# --- filesystem views -----------------------------------------------------------------------------

def _view(state: State, image: str, platform: Optional[str]) -> views.ImageView:
    return views.ImageView.of_image(state.store(), image, platform)


def _owner(node: views.Node) -> str:
    return f"{node.uname or node.uid}/{node.gname or node.gid}"


def _mtime_text(node: views.Node) -> str:
    return datetime.fromtimestamp(node.mtime, timezone.utc).strftime("%Y-%m-%d %H:%M")


@cli.command(name="ls")
@click.argument("image")
@click.argument("path", required=False, default="/")
@click.option("-R", "--recursive", is_flag=True, help="List everything under PATH.")
@_platform_option
@_format_option
@_quiet_option
@pass_state
def ls_(state: State, image, path, recursive, platform, fmt):
    """List files of an image.

    The image's filesystem is the union of its layers, whiteouts applied.
    Long format: mode, owner, size, mtime (UTC), path, link target. A
    directory lists its entries; a symbolic link is shown itself unless
    PATH ends with /.

    \b
    Example:
      layerstore ls localhost/corpus/small:1.0-amd64 /etc
      layerstore ls -R localhost/corpus/small:1.0-amd64 /smallapp
    """
    state.doing("ls", image, path)
    view = _view(state, image, platform)
    node = view.lookup(path, follow_symlinks=path.endswith("/"))
    if node.is_dir:
        nodes = list(view.walk(node.path)) if recursive else view.listdir(node.path)
    else:
        nodes = [node]
    if state.fmt(fmt) == "json":
        _print_json([n.to_json() for n in nodes])
        return
    if state.quiet:
        for n in nodes:
            click.echo(n.path)
        return
    sizes = [f"{n.devmajor},{n.devminor}" if n.type in ("char", "block") else str(n.size) for n in nodes]
    owners = [_owner(n) for n in nodes]
    sw = max((len(s) for s in sizes), default=1)
    ow = max((len(o) for o in owners), default=1)
    for n, size, owner in zip(nodes, sizes, owners):
        line = f"{n.permissions()} {owner.ljust(ow)} {size.rjust(sw)} {_mtime_text(n)} {n.path}"
        if n.type == "symlink":
            line += f" -> {n.linkname}"
        elif n.type == "hardlink":
            line += f" link to {n.linkname}"
        click.echo(line)


@cli.command(name="cat")
@click.argument("image")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@_platform_option
@pass_state
def cat_(state: State, image, paths, platform):
    """Print files of an image.

    Streams them to stdout, symbolic links followed inside the image, like
    docker cp without a container.

    \b
    Example:
      layerstore cat localhost/corpus/small:1.0-amd64 /etc/os-release
    """
    state.doing("cat", image)
    view = _view(state, image, platform)
    out = click.get_binary_stream("stdout")
    for path in paths:
        state.doing("cat", image, path)
        for piece in view.iter_content(path):
            out.write(piece)
    out.flush()


@cli.command()
@click.argument("image")
@click.option("-o", "--output", metavar="FILE",
              help="Write the tar to FILE (default: stdout, refused when it is a terminal).")
@_platform_option
@pass_state
def export(state: State, image, output, platform):
    """Export an image's filesystem as one tar.

    The flattened root filesystem (layers applied, whiteouts removed), as
    docker export writes a container's.

    \b
    Example:
      layerstore export localhost/corpus/small:1.0-amd64 -o rootfs.tar
      layerstore export localhost/corpus/small:1.0-amd64 | tar -tv
    """
    state.doing("export", image)
    store = state.store()
    layers = views.image_layers(store, image, platform)
    state.doing("export", image, "-o", output)
    out, commit, abort = _open_output(output, "a tar archive")
    state.doing("export", image)
    try:
        with _metered(state, "export", sum(layer.size for layer in layers)) as bar:
            view = views.ImageView(layers, image)
            bar.grow(view.export_size())
            state.doing("export", image, "-o", output)
            view.export(out)
        commit()
    except BaseException:
        abort()
        raise


@cli.command(name="diff")
@click.argument("image1")
@click.argument("image2")
@_platform_option
@_format_option
@_quiet_option
@pass_state
def diff_(state: State, image1, image2, platform, fmt):
    """Show changes between two images' filesystems.

    From IMAGE1 to IMAGE2, as docker diff shows a container's: A added, C
    changed (with what: type, mode, owner, size, mtime, target, content), D
    deleted.

    \b
    Example:
      layerstore diff localhost/corpus/small:1.0-amd64 localhost/corpus/small:1.0-amd64-vfs
    """
    state.doing("diff", image1, image2)
    a = _view(state, image1, platform)
    b = _view(state, image2, platform)
    changes = views.diff(a, b)
    if state.fmt(fmt) == "json":
        _print_json(changes)
        return
    for c in changes:
        suffix = f"  ({', '.join(c.what)})" if c.what and not state.quiet else ""
        click.echo(f"{c.kind} {c.path}{suffix}")


@cli.command()
@click.argument("image")
@_platform_option
@_format_option
@_quiet_option
@pass_state
def layers(state: State, image, platform, fmt):
    """Show what each layer of an image changes.

    Per layer: paths added, changed and removed, and the bytes of its
    files that a later layer overwrites or deletes (wasted space, as dive
    estimates it).

    \b
    Example:
      layerstore layers localhost/corpus/small:1.0-amd64
    """
    state.doing("layers", image)
    store = state.store()
    view = _view(state, image, platform)
    steps = [s for s in reversed(store.history(image, platform)) if not s.empty_layer]
    created_by = [s.created_by for s in steps] if len(steps) == len(view.changes) else [""] * len(view.changes)
    content = sum(c.content_bytes for c in view.changes)
    wasted = sum(c.wasted_bytes for c in view.changes)
    if state.fmt(fmt) == "json":
        _print_json({"image": image,
                     "layers": [dict(_jsonable(c), created_by=cb) for c, cb in zip(view.changes, created_by)],
                     "content_bytes": content, "wasted_bytes": wasted})
        return
    rows = []
    for c, cb in zip(view.changes, created_by):
        cb = cb.replace("\n", " ")
        rows.append([c.index, _short(c.diff_id), human_size(c.size), c.added, c.changed, c.removed,
                     human_size(c.wasted_bytes), cb[:44] + "…" if len(cb) > 45 else cb])
    _table(["#", "DIFF ID", "SIZE", "ADDED", "CHANGED", "REMOVED", "WASTED", "CREATED BY"], rows,
           right=[0, 2, 3, 4, 5, 6])
    if not state.quiet:
        pct = 100.0 * wasted / content if content else 0.0
        click.echo(f"Wasted: {human_size(wasted)} of {human_size(content)} of file content ({pct:.1f}%)")


# --- entry point ----------------------------------------------------------------------------------------

def _error_line(what: str, why: str) -> str:
    """``layerstore: error: <what>: <why>``, without repeating in ``why``
    the operands ``what`` already names."""
    for operand in what.split()[1:]:
        if why.startswith(operand + ": "):
            why = why[len(operand) + 2:]
        if why.endswith(f" ({operand})"):
            why = why[:-len(operand) - 3]
    return f"layerstore: error: {what}: {why}" if what else f"layerstore: error: {why}"


# click >= 8.2 raises this for a group run without a command; 8.1 prints the help itself
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns
    the exit code (see :data:`EXIT_CODES`)."""
    state = State()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = cli.main(args=args, prog_name="layerstore", obj=state, standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except _NO_ARGS_IS_HELP as exc:
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
        return EXIT_USAGE
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx is not None else "layerstore"
        msg = exc.format_message().replace("\n", " ")
        click.echo(f"layerstore: error: {msg} (see '{cmd} --help')", err=True)
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("layerstore: error: interrupted", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        if state.debug:
            raise
        click.echo(f"layerstore: error: {state.what}: interrupted", err=True)
        return EXIT_INTERRUPTED
    except (BrokenPipeError, _OutputClosed):
        # the reader went away (`layerstore cat ... | head`): say nothing
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_PIPE
    except (LayerStoreError, OSError) as exc:
        if state.debug:
            raise
        why = _why(exc)
        if exit_code_for(exc) == EXIT_REFUSED:
            why = why.replace("use force=True", "use --force")
        click.echo(_error_line(state.what, why), err=True)
        return exit_code_for(exc)
    except Exception as exc:  # a bug: say what, keep the traceback for --debug
        if state.debug:
            raise
        click.echo(f"layerstore: error: {state.what}: internal error: {type(exc).__name__}: {_why(exc)} "
                   "(run with --debug for the traceback)", err=True)
        return EXIT_ERROR
