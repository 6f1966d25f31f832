"""Image references: ``[registry/][namespace/]repository[:tag][@digest]``.

Two families of rules are implemented, because tools disagree on defaults.

Docker / distribution reference rules (``github.com/distribution/reference``)
---------------------------------------------------------------------------
Grammar (distribution/reference, ``reference.go`` package comment and
``regexp.go``)::

    reference            := name [ ":" tag ] [ "@" digest ]
    name                 := [domain '/'] remote-name
    domain               := host [':' port-number]
    host                 := domain-name | IPv4address | '[' IPv6address ']'
    domain-name          := domain-component ['.' domain-component]*
    domain-component     := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    port-number          := /[0-9]+/
    IPv6address          := /[a-fA-F0-9:]+/     (no zone, no embedded IPv4)
    remote-name          := path-component ['/' path-component]*
    path-component       := alpha-numeric [separator alpha-numeric]*
    alpha-numeric        := /[a-z0-9]+/
    separator            := /[_.]|__|[-]+/
    tag                  := /[\\w][\\w.-]{0,127}/          (ASCII \\w)
    digest               := algorithm ":" hex   (reference grammar; then
                            checked as an OCI digest, see below)
    algorithm            := /[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*/
    hex                  := /[0-9a-fA-F]{32,}/
    identifier           := /[a-f0-9]{64}/

Further rules:

* the remote name (path) is at most 255 characters (``NameTotalLengthMax``;
  the domain is not counted);
* the repository must be lowercase; the domain may contain uppercase;
* the digest is then validated as go-digest does (:func:`layerstore.digest.parse_digest`):
  sha256 needs 64 lowercase hex digits, sha512 128, other algorithms are
  unsupported;
* normalisation (``normalize.go``): a first path element is a domain if it
  contains ``.`` or ``:``, is ``localhost``, or is not lowercase; otherwise the
  domain is ``docker.io``; ``index.docker.io`` is rewritten to ``docker.io``;
  a single-element Docker Hub path gets ``library/``; a bare 64-hex identifier
  is refused as a name;
* inputs longer than 4096 characters are refused (``invalid-format``) before
  matching; no valid reference is that long in practice (255-character path,
  128-character tag, a digest and a host name).

Functions, with the distribution/reference API each mirrors:

* :func:`parse` -- ``ParseDockerRef``: normalised; a reference with a digest
  keeps only the digest (a tag given with it is dropped, as Docker and
  containerd do: the digest already pins the content); a reference with
  neither gets the tag ``latest``.
* :func:`parse_normalized` -- ``ParseNormalizedNamed``: normalised, no
  default tag, tag and digest both kept.
* :func:`parse_raw` -- ``Parse``: no normalisation.
* :func:`parse_named` -- ``ParseNamed``: input must already be canonical.
* :func:`parse_any` -- ``ParseAnyReference``: also accepts a bare digest or
  64-hex image ID.
* :func:`with_name`, :func:`with_tag`, :func:`with_digest`,
  :func:`tag_name_only`, :func:`trim_named`, :func:`familiar_name`,
  :func:`familiar_string`, :func:`familiar_match`, :func:`split_docker_domain`.
* :func:`match_domain`, :func:`match_name`, :func:`match_reference`,
  :func:`is_identifier`: the anchored regular expressions themselves.

go-containerregistry rules (``github.com/google/go-containerregistry/pkg/name``)
------------------------------------------------------------------------------
:func:`new_registry`, :func:`new_repository`, :func:`new_tag`,
:func:`new_digest` and :func:`parse_reference` follow that package: default
registry ``index.docker.io`` (``docker.io`` is rewritten to it), ``library/``
added for single-element Docker Hub repositories, default tag ``latest``;
with ``strict=True`` (``StrictValidation``) none of these defaults may be
needed. Its character rules are looser than Docker's (repository characters
``[a-z0-9_./-]``, 1..255 characters; tag characters ``[A-Za-z0-9_.-]``, 1..128;
only ``sha256`` digests; a registry must be a valid RFC 3986 authority).

Errors
------
Every function raises :class:`layerstore.errors.ReferenceError` (also
importable from here) with ``input``, ``kind`` (one of the constants below)
and a message naming the input and the rule that failed.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Tuple

from .digest import Digest, parse_digest
from .errors import DigestError, ReferenceError

__all__ = [
    "Reference",
    "ReferenceError",
    "parse",
    "parse_normalized",
    "parse_raw",
    "parse_named",
    "parse_any",
    "with_name",
    "with_tag",
    "with_digest",
    "tag_name_only",
    "trim_named",
    "familiar_name",
    "familiar_string",
    "familiar_match",
    "split_docker_domain",
    "match_domain",
    "match_name",
    "match_reference",
    "is_identifier",
    "Registry",
    "Repository",
    "TagReference",
    "DigestReference",
    "new_registry",
    "new_repository",
    "new_tag",
    "new_digest",
    "parse_reference",
    "DEFAULT_DOMAIN",
    "LEGACY_DEFAULT_DOMAIN",
    "OFFICIAL_REPO_PREFIX",
    "DEFAULT_TAG",
    "NAME_TOTAL_LENGTH_MAX",
    "GGCR_DEFAULT_REGISTRY",
]

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
LOCALHOST = "localhost"
#: Maximum length of the remote name (path), in characters.
NAME_TOTAL_LENGTH_MAX = 255
GGCR_DEFAULT_REGISTRY = "index.docker.io"

# Error kinds (ReferenceError.kind). The distribution/reference and go-digest
# error each corresponds to is given in brackets.
NAME_EMPTY = "name-empty"                      # [ErrNameEmpty]
INVALID_FORMAT = "invalid-format"              # [ErrReferenceInvalidFormat]
NAME_UPPERCASE = "name-uppercase"              # [ErrNameContainsUppercase]
NAME_TOO_LONG = "name-too-long"                # [ErrNameTooLong]
NAME_NOT_CANONICAL = "name-not-canonical"      # [ErrNameNotCanonical]
NAME_IS_IDENTIFIER = "name-is-identifier"      # ("cannot specify 64-byte hexadecimal strings")
TAG_INVALID = "tag-invalid"                    # [ErrTagInvalidFormat]
DIGEST_INVALID_FORMAT = "digest-invalid-format"  # [ErrDigestInvalidFormat, digest.ErrDigestInvalidFormat]
DIGEST_INVALID_LENGTH = "digest-invalid-length"  # [digest.ErrDigestInvalidLength]
DIGEST_UNSUPPORTED = "digest-unsupported"      # [digest.ErrDigestUnsupported]
BAD_PATTERN = "bad-pattern"                    # [path.ErrBadPattern]
BAD_NAME = "bad-name"                          # [go-containerregistry ErrBadName]

# --- the grammar, as regular expressions (always used with fullmatch) -------

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = _ALPHANUMERIC + r"(?:" + _SEPARATOR + _ALPHANUMERIC + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_HOST = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6 + r")"
_DOMAIN = _HOST + r"(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_REF_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = r"(?:" + _DOMAIN + r"/)?" + _REMOTE_NAME

_DOMAIN_RE = re.compile(_DOMAIN)
_NAME_RE = re.compile(r"(?:(" + _DOMAIN + r")/)?(" + _REMOTE_NAME + r")")
_REFERENCE_RE = re.compile(r"(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _REF_DIGEST + r"))?")
_TAG_RE = re.compile(_TAG)
_REF_DIGEST_RE = re.compile(_REF_DIGEST)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")

# Inputs longer than this cannot be valid (255-character path, 128-character
# tag, a digest and a domain); refusing them early bounds the regex work.
_MAX_INPUT = 4096


def _fail(text, kind, reason):
    return ReferenceError(text, kind, reason)


def match_domain(text: str) -> bool:
    """``True`` if ``text`` is a whole ``domain`` (host[:port]) of the grammar."""
    return isinstance(text, str) and len(text) <= _MAX_INPUT and _DOMAIN_RE.fullmatch(text) is not None


def match_name(text: str) -> Optional[Tuple[str, str]]:
    """``(domain, remote_name)`` if ``text`` is a whole ``name``, else ``None``.

    The domain is ``""`` when absent. As in distribution/reference, the first
    element is taken as a domain whenever the grammar allows it (``a/b`` gives
    ``("a", "b")``); no normalisation is applied."""
    if not isinstance(text, str) or len(text) > _MAX_INPUT:
        return None
    m = _NAME_RE.fullmatch(text)
    if m is None:
        return None
    return (m.group(1) or "", m.group(2))


def match_reference(text: str) -> Optional[Tuple[str, str, str]]:
    """``(name, tag, digest)`` if ``text`` is a whole ``reference``, else ``None``.

    Absent parts are ``""``. Only the grammar is checked (no length, no digest
    validation)."""
    if not isinstance(text, str) or len(text) > _MAX_INPUT:
        return None
    m = _REFERENCE_RE.fullmatch(text)
    if m is None:
        return None
    return (m.group(1), m.group(2) or "", m.group(3) or "")


def is_identifier(text: str) -> bool:
    """``True`` if ``text`` is exactly 64 lowercase hex digits (an image ID)."""
    return isinstance(text, str) and _IDENTIFIER_RE.fullmatch(text) is not None


# --- the value type ----------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """A parsed image reference.

    Fields:
        domain: registry host[:port], ``""`` when the reference has none
            (only possible without normalisation).
        path: the remote name, e.g. ``library/busybox``; ``""`` for a
            digest-only reference from :func:`parse_any`.
        tag: the tag, or ``None`` when not tagged.
        digest: the digest text, or ``None``. It is a
            :class:`layerstore.digest.Digest` whenever it was validated as one
            (every parsing function does); :func:`with_digest` checks only the
            reference grammar, as distribution/reference does, and keeps a
            plain ``str`` when the digest is not a valid OCI digest.

    ``str(ref)`` is the full form (``docker.io/library/busybox:latest``);
    :meth:`familiar` the short form Docker shows (``busybox:latest``).
    Equality and hashing use the four fields.
    """

    domain: str = ""
    path: str = ""
    tag: Optional[str] = None
    digest: Optional[str] = None

    @property
    def name(self) -> str:
        """``domain/path`` (or ``path`` when there is no domain)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def repository(self) -> str:
        """Alias of :attr:`name`."""
        return self.name

    @property
    def tagged(self) -> bool:
        return self.tag is not None

    @property
    def digested(self) -> bool:
        return self.digest is not None

    @property
    def is_name_only(self) -> bool:
        return self.tag is None and self.digest is None

    def __str__(self) -> str:
        s = self.name
        if self.tag is not None:
            s += ":" + self.tag
        if self.digest is not None:
            s += ("@" if s else "") + str(self.digest)
        return s

    def familiar(self) -> str:
        """Short form: ``docker.io`` and a lone ``library/`` dropped (``FamiliarString``)."""
        return familiar_string(self)

    def familiar_name(self) -> str:
        """Short name without tag or digest (``FamiliarName``)."""
        return familiar_name(self)

    def with_tag(self, tag: str) -> "Reference":
        return with_tag(self, tag)

    def with_digest(self, digest) -> "Reference":
        return with_digest(self, digest)


# --- distribution/reference functions ------------------------------------------

def _digest_for_reference(text, digest_text, algorithms):
    try:
        return parse_digest(digest_text, algorithms=algorithms)
    except DigestError as exc:
        kind = {"length": DIGEST_INVALID_LENGTH, "unsupported": DIGEST_UNSUPPORTED}.get(
            getattr(exc, "kind", ""), DIGEST_INVALID_FORMAT)
        raise _fail(text, kind, f"bad digest: {exc.reason}") from exc


def parse_raw(text: str, *, algorithms: Optional[Iterable[str]] = None) -> Reference:
    """Parse without normalisation (distribution/reference ``Parse``).

    ``algorithms`` restricts the digest algorithms accepted (default sha256
    and sha512).

    Raises ReferenceError: ``name-empty`` for ``""``; ``name-uppercase`` when
    the input would match once lowercased; ``invalid-format`` otherwise when
    it does not match the grammar; ``name-too-long`` when the path exceeds
    255 characters; ``digest-*`` for a bad digest."""
    if not isinstance(text, str):
        raise _fail(text, INVALID_FORMAT, f"expected a string, got {type(text).__name__}")
    if text == "":
        raise _fail(text, NAME_EMPTY, "repository name must have at least one component")
    if len(text) > _MAX_INPUT:
        raise _fail(text[:64] + "...", INVALID_FORMAT, f"longer than {_MAX_INPUT} characters")
    m = _REFERENCE_RE.fullmatch(text)
    if m is None:
        if _REFERENCE_RE.fullmatch(text.lower()) is not None:
            raise _fail(text, NAME_UPPERCASE, "repository name must be lowercase")
        raise _fail(text, INVALID_FORMAT,
                    "does not match [domain/]path-component(/path-component)*[:tag][@digest]")
    name, tag, digest_text = m.group(1), m.group(2), m.group(3)
    nm = _NAME_RE.fullmatch(name)
    domain, path = nm.group(1) or "", nm.group(2)
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise _fail(text, NAME_TOO_LONG,
                    f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters "
                    f"(path has {len(path)})")
    digest = None
    if digest_text is not None:
        digest = _digest_for_reference(text, digest_text, algorithms)
    return Reference(domain, path, tag, digest)


def split_docker_domain(name: str) -> Tuple[str, str]:
    """Split a name into ``(domain, remainder)`` with Docker's defaults.

    The first ``/``-separated element is the domain if it contains ``.`` or
    ``:``, equals ``localhost``, or is not all lowercase; otherwise the domain
    is ``docker.io`` and the whole input is the remainder. ``index.docker.io``
    becomes ``docker.io``; on ``docker.io`` a remainder without ``/`` gets
    ``library/`` (distribution/reference ``normalize.go``, splitDockerDomain).
    The remainder may still carry ``:tag``/``@digest``."""
    first, sep, rest = name.partition("/")
    if not sep:
        domain, remainder = DEFAULT_DOMAIN, name
    elif first == LOCALHOST or "." in first or ":" in first or first.lower() != first:
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, name
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_normalized(text: str, *, algorithms: Optional[Iterable[str]] = None) -> Reference:
    """Parse and normalise (distribution/reference ``ParseNormalizedNamed``).

    ``busybox`` -> ``docker.io/library/busybox`` (no tag added),
    ``busybox:1@sha256:...`` keeps both tag and digest.

    Raises ReferenceError: ``name-is-identifier`` for a bare 64-hex string,
    ``name-uppercase`` when the repository part is not lowercase, and the
    errors of :func:`parse_raw`."""
    if not isinstance(text, str):
        raise _fail(text, INVALID_FORMAT, f"expected a string, got {type(text).__name__}")
    if text == "":
        raise _fail(text, NAME_EMPTY, "repository name must have at least one component")
    if _IDENTIFIER_RE.fullmatch(text):
        raise _fail(text, NAME_IS_IDENTIFIER,
                    "a repository name cannot be a 64-character hexadecimal string (it is an image ID)")
    domain, remainder = split_docker_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise _fail(text, NAME_UPPERCASE, f"repository name ({remote}) must be lowercase")
    try:
        ref = parse_raw(domain + "/" + remainder, algorithms=algorithms)
    except ReferenceError as exc:
        # Report the caller's text, not the normalised one.
        raise _fail(text, exc.kind, exc.reason) from None
    if ref.path == "":
        raise _fail(text, INVALID_FORMAT, "reference has no name")
    return ref


def parse(text: str) -> Reference:
    """Parse like Docker does for pulls (distribution/reference ``ParseDockerRef``).

    Normalised as :func:`parse_normalized`; then if a digest is present the
    tag is dropped (``busybox:1@sha256:X`` -> ``docker.io/library/busybox@sha256:X``),
    and if neither tag nor digest is present the tag ``latest`` is added.

    Raises ReferenceError (see :func:`parse_normalized`)."""
    ref = parse_normalized(text)
    if ref.digest is not None:
        return Reference(ref.domain, ref.path, None, ref.digest)
    if ref.tag is None:
        return Reference(ref.domain, ref.path, DEFAULT_TAG, None)
    return ref


def parse_named(text: str, *, algorithms: Optional[Iterable[str]] = None) -> Reference:
    """Parse a reference that must already be in canonical (normalised) form
    (distribution/reference ``ParseNamed``); raises ReferenceError with kind
    ``name-not-canonical`` for familiar forms such as ``foo`` or ``docker.io/foo``."""
    ref = parse_normalized(text, algorithms=algorithms)
    if str(ref) != text:
        raise _fail(text, NAME_NOT_CANONICAL,
                    f"repository name must be canonical (canonical form: {ref})")
    return ref


def parse_any(text: str, *, algorithms: Optional[Iterable[str]] = None) -> Reference:
    """Parse a name reference, a bare digest or a 64-hex image ID
    (distribution/reference ``ParseAnyReference``).

    A 64-hex ID ``X`` gives a digest-only reference ``sha256:X``; a valid digest
    gives a digest-only reference; anything else goes to :func:`parse_normalized`."""
    if isinstance(text, str) and _IDENTIFIER_RE.fullmatch(text):
        return Reference(digest=Digest("sha256:" + text))
    try:
        return Reference(digest=parse_digest(text, algorithms=algorithms))
    except DigestError:
        pass
    return parse_normalized(text, algorithms=algorithms)


def with_name(name: str) -> Reference:
    """A name-only reference from ``[domain/]path`` (``WithName``); no normalisation.

    Raises ReferenceError: ``invalid-format`` if ``name`` is not a whole
    ``name`` of the grammar, ``name-too-long`` for a path over 255 characters."""
    if not isinstance(name, str):
        raise _fail(name, INVALID_FORMAT, f"expected a string, got {type(name).__name__}")
    if len(name) > _MAX_INPUT:
        raise _fail(name[:64] + "...", INVALID_FORMAT, f"longer than {_MAX_INPUT} characters")
    m = _NAME_RE.fullmatch(name)
    if m is None:
        raise _fail(name, INVALID_FORMAT, "does not match [domain/]path-component(/path-component)*")
    if len(m.group(2)) > NAME_TOTAL_LENGTH_MAX:
        raise _fail(name, NAME_TOO_LONG,
                    f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    return Reference(m.group(1) or "", m.group(2))


def with_tag(ref: Reference, tag: str) -> Reference:
    """``ref`` with its tag replaced (``WithTag``); a digest is kept.

    Raises ReferenceError ``tag-invalid`` unless ``tag`` matches
    ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``."""
    if not isinstance(tag, str) or _TAG_RE.fullmatch(tag) is None:
        raise _fail(f"{ref}:{tag}", TAG_INVALID,
                    f"tag {tag!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
    return Reference(ref.domain, ref.path, tag, ref.digest)


def with_digest(ref: Reference, digest) -> Reference:
    """``ref`` with its digest replaced (``WithDigest``); a tag is kept.

    Only the reference grammar's digest pattern is checked (algorithm ``:`` at
    least 32 hex digits), as distribution/reference does; the stored value is
    a :class:`Digest` when it is also a valid OCI digest.
    Raises ReferenceError ``digest-invalid-format``."""
    text = str(digest) if isinstance(digest, str) else digest
    if not isinstance(text, str) or _REF_DIGEST_RE.fullmatch(text) is None:
        raise _fail(f"{ref}@{digest}", DIGEST_INVALID_FORMAT,
                    f"digest {digest!r} must match algorithm:hex with at least 32 hex digits")
    try:
        value = parse_digest(text)
    except DigestError:
        value = text
    return Reference(ref.domain, ref.path, ref.tag, value)


def tag_name_only(ref: Reference) -> Reference:
    """Add the tag ``latest`` to a reference that has neither tag nor digest (``TagNameOnly``)."""
    if ref.is_name_only and ref.path:
        return Reference(ref.domain, ref.path, DEFAULT_TAG, None)
    return ref


def trim_named(ref: Reference) -> Reference:
    """The name alone, tag and digest removed (``TrimNamed``)."""
    return Reference(ref.domain, ref.path)


def _familiar_parts(ref: Reference) -> Tuple[str, str]:
    domain, path = ref.domain, ref.path
    if domain == DEFAULT_DOMAIN:
        domain = ""
        if path.startswith(OFFICIAL_REPO_PREFIX):
            rest = path[len(OFFICIAL_REPO_PREFIX):]
            if "/" not in rest:
                path = rest
    return domain, path


def familiar_name(ref: Reference) -> str:
    """Docker's short name: ``docker.io/`` removed, and ``library/`` removed when
    what follows has no further ``/`` (``FamiliarName``)."""
    domain, path = _familiar_parts(ref)
    return f"{domain}/{path}" if domain else path


def familiar_string(ref: Reference) -> str:
    """:func:`familiar_name` plus ``:tag`` and ``@digest`` (``FamiliarString``)."""
    if not ref.path:
        return str(ref)
    s = familiar_name(ref)
    if ref.tag is not None:
        s += ":" + ref.tag
    if ref.digest is not None:
        s += "@" + str(ref.digest)
    return s


def _compile_path_pattern(pattern: str) -> list:
    """Tokens of a ``path.Match`` pattern (Go ``path`` package); raises on a
    malformed pattern, wherever the fault is."""
    tokens = []
    n = len(pattern)
    i = 0

    def bad(why):
        return _fail(pattern, BAD_PATTERN, f"syntax error in pattern {pattern!r}: {why}")

    def esc(j):
        if j >= n or pattern[j] in "-]":
            raise bad("bad character range")
        if pattern[j] == "\\":
            j += 1
            if j >= n:
                raise bad("trailing backslash in character class")
        return pattern[j], j + 1

    while i < n:
        c = pattern[i]
        if c == "*":
            tokens.append(("*",))
            i += 1
        elif c == "?":
            tokens.append(("?",))
            i += 1
        elif c == "[":
            i += 1
            negated = False
            if i < n and pattern[i] == "^":
                negated = True
                i += 1
            ranges = []
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = esc(i)
                hi = lo
                if i < n and pattern[i] == "-":
                    hi, i = esc(i + 1)
                ranges.append((lo, hi))
            tokens.append(("[", negated, tuple(ranges)))
        elif c == "\\":
            i += 1
            if i >= n:
                raise bad("trailing backslash")
            tokens.append(("=", pattern[i]))
            i += 1
        else:
            tokens.append(("=", c))
            i += 1
    return tokens


def _path_match(tokens: list, name: str) -> bool:
    memo = {}

    def m(t, s):
        key = (t, s)
        if key in memo:
            return memo[key]
        if t == len(tokens):
            r = s == len(name)
        else:
            tok = tokens[t]
            if tok[0] == "*":
                r = False
                j = s
                while True:
                    if m(t + 1, j):
                        r = True
                        break
                    if j >= len(name) or name[j] == "/":
                        break
                    j += 1
            elif s >= len(name):
                r = False
            elif tok[0] == "?":
                r = name[s] != "/" and m(t + 1, s + 1)
            elif tok[0] == "[":
                ch = name[s]
                inside = any(lo <= ch <= hi for lo, hi in tok[2])
                r = (inside != tok[1]) and m(t + 1, s + 1)
            else:
                r = name[s] == tok[1] and m(t + 1, s + 1)
        memo[key] = r
        return r

    return m(0, 0)


def familiar_match(pattern: str, ref: Reference) -> bool:
    """``True`` if ``pattern`` matches the familiar string of ``ref`` or, for a
    named reference, its familiar name (distribution/reference ``FamiliarMatch``).

    Pattern syntax is Go's ``path.Match``: ``*`` any run of characters other
    than ``/``, ``?`` one character other than ``/``, ``[...]`` / ``[^...]``
    character classes with ranges, ``\\`` escapes. Raises ReferenceError
    ``bad-pattern`` for a malformed pattern."""
    tokens = _compile_path_pattern(pattern)
    if _path_match(tokens, familiar_string(ref)):
        return True
    if ref.path:
        return _path_match(tokens, familiar_name(ref))
    return False


# --- go-containerregistry (pkg/name) ---------------------------------------

_GGCR_REPO_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-./")
_GGCR_TAG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_GGCR_DOCKER_ALIAS = "docker.io"
# Characters Go's net/url accepts in a host (RFC 3986 reg-name / IP-literal,
# plus ":" for the port and "<>\"" which Go also lets through).
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        "-._~!$&'()*+,;=:[]<>\"")
_HEX = frozenset("0123456789abcdefABCDEF")
_RE_LOCAL = re.compile(r".*\.localhost(?::[0-9]{1,5})?")
_RE_LOOPBACK4 = re.compile(r"127\.0\.0\.1(?::[0-9]{1,5})?")
_RE_LOOPBACK6 = re.compile(r"::1|\[::1\](?::[0-9]{1,5})?")
_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def _bad_name(text, reason):
    return _fail(text, BAD_NAME, reason)


def _check_element(text, what, value, chars, min_len, max_len):
    if len(value) < min_len or len(value) > max_len:
        raise _bad_name(text, f"{what} {value!r} must be between {min_len} and {max_len} characters")
    bad = sorted({c for c in value if c not in chars})
    if bad:
        raise _bad_name(text, f"{what} {value!r} contains invalid characters {''.join(bad)!r}")


def _is_uri_authority(name: str) -> bool:
    """True if ``name`` is a whole RFC 3986 authority host[:port] with no
    userinfo, as Go's ``url.Parse("//" + name).Host == name`` decides."""
    if any(c in name for c in "/?#@") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return False
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            return False
        port = name[end + 1:]
    else:
        colon = name.rfind(":")
        port = name[colon:] if colon >= 0 else ""
    if port and (port[0] != ":" or not all("0" <= c <= "9" for c in port[1:])):
        return False
    i = 0
    while i < len(name):
        c = name[i]
        if c == "%":
            # pct-encoded (RFC 3986, 2.1); like Go, an encoded ASCII byte other
            # than "%25" is refused in a host.
            pair = name[i + 1:i + 3]
            if len(pair) != 2 or not all(ch in _HEX for ch in pair):
                return False
            if int(pair[0], 16) < 8 and pair != "25":
                return False
            i += 3
            continue
        if ord(c) < 0x80 and c not in _HOST_CHARS:
            return False
        i += 1
    return True


class Registry:
    """A registry (go-containerregistry ``name.Registry``).

    Attributes:
        registry_str: the registry host[:port] (str); ``name`` and ``str()``
            give the same.
        insecure: whether plain HTTP was requested (bool).
    """

    __slots__ = ("registry_str", "insecure")

    def __init__(self, registry_str: str, insecure: bool = False):
        self.registry_str = registry_str
        self.insecure = insecure

    @property
    def name(self) -> str:
        return self.registry_str

    def __str__(self):
        return self.registry_str

    def __repr__(self):
        return f"Registry({self.registry_str!r}, insecure={self.insecure})"

    def __eq__(self, other):
        return (isinstance(other, Registry) and self.registry_str == other.registry_str
                and self.insecure == other.insecure)

    def __hash__(self):
        return hash((self.registry_str, self.insecure))

    def scope(self, action: str) -> str:
        """Token scope for registry-level access: always ``registry:catalog:*``."""
        return "registry:catalog:*"

    @property
    def is_rfc1918(self) -> bool:
        """``True`` if the host (text before the first ``:``) is an IP address in
        10/8, 172.16/12 or 192.168/16 (RFC 1918, section 3)."""
        host = self.registry_str.split(":", 1)[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in _RFC1918 if net.version == ip.version)

    @property
    def scheme(self) -> str:
        """``"http"`` if insecure, for RFC 1918 addresses, ``localhost`` and
        ``*.localhost`` (RFC 6761, section 6.3), ``127.0.0.1`` and ``::1``
        (each with an optional port); ``"https"`` otherwise."""
        name = self.registry_str
        if self.insecure or self.is_rfc1918:
            return "http"
        if name == LOCALHOST or name.startswith(LOCALHOST + ":"):
            return "http"
        if _RE_LOCAL.fullmatch(name) or _RE_LOOPBACK4.fullmatch(name) or _RE_LOOPBACK6.fullmatch(name):
            return "http"
        return "https"


def new_registry(name: str, *, strict: bool = False, insecure: bool = False,
                 default_registry: str = GGCR_DEFAULT_REGISTRY) -> Registry:
    """go-containerregistry ``NewRegistry``: ``""`` means ``default_registry``
    (not allowed with ``strict``), ``docker.io`` is rewritten to
    ``index.docker.io``, and the name must be a valid RFC 3986 authority
    (RFC 3986, section 3.2). Raises ReferenceError ``bad-name``."""
    if not isinstance(name, str):
        raise _bad_name(name, f"expected a string, got {type(name).__name__}")
    if strict and name == "":
        raise _bad_name(name, "strict validation requires the registry to be explicitly defined")
    if not _is_uri_authority(name):
        raise _bad_name(name, f"registries must be valid RFC 3986 URI authorities: {name}")
    if name == "":
        name = default_registry
    if name == _GGCR_DOCKER_ALIAS:
        name = GGCR_DEFAULT_REGISTRY
    return Registry(name, insecure)


class Repository:
    """A repository in a registry (go-containerregistry ``name.Repository``).

    Attributes:
        registry: the :class:`Registry`.
        repository: the repository text as given (without implicit ``library/``).
    Properties: ``registry_str``, ``repository_str`` (with ``library/`` added for
    single-element Docker Hub names), ``name`` (= ``str()``), ``scheme``.
    """

    __slots__ = ("registry", "repository")

    def __init__(self, registry: Registry, repository: str):
        self.registry = registry
        self.repository = repository

    @property
    def _implicit_namespace(self) -> bool:
        return "/" not in self.repository and self.registry.registry_str == GGCR_DEFAULT_REGISTRY

    @property
    def registry_str(self) -> str:
        return self.registry.registry_str

    @property
    def repository_str(self) -> str:
        if self._implicit_namespace:
            return OFFICIAL_REPO_PREFIX + self.repository
        return self.repository

    @property
    def name(self) -> str:
        reg = self.registry.name
        return f"{reg}/{self.repository_str}" if reg else self.repository_str

    @property
    def scheme(self) -> str:
        return self.registry.scheme

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"Repository({self.name!r})"

    def __eq__(self, other):
        return (isinstance(other, Repository) and self.registry == other.registry
                and self.repository_str == other.repository_str)

    def __hash__(self):
        return hash((self.registry, self.repository_str))

    def scope(self, action: str) -> str:
        """Token scope ``repository:<repository_str>:<action>``."""
        return f"repository:{self.repository_str}:{action}"

    def tag(self, identifier: str) -> "TagReference":
        """A tag in this repository; ``identifier`` is not validated."""
        t = TagReference(self, identifier, "")
        t.original = t.name
        return t

    def digest(self, identifier: str) -> "DigestReference":
        """A digest in this repository; ``identifier`` is not validated."""
        d = DigestReference(self, identifier, "")
        d.original = d.name
        return d


def new_repository(name: str, *, strict: bool = False, insecure: bool = False,
                   default_registry: str = GGCR_DEFAULT_REGISTRY) -> Repository:
    """go-containerregistry ``NewRepository``.

    The first ``/`` element is the registry when it contains ``.`` or ``:`` or
    is ``localhost``; the repository must be 1..255 characters of
    ``[a-z0-9_./-]``. With ``strict`` the registry must be explicit and a
    Docker Hub repository must include its namespace (``library/ubuntu``).
    Raises ReferenceError ``bad-name``."""
    if not isinstance(name, str) or name == "":
        raise _bad_name(name, "a repository name must be specified")
    registry, repo = "", name
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == LOCALHOST):
        registry, repo = first, rest
    _check_element(name, "repository", repo, _GGCR_REPO_CHARS, 1, NAME_TOTAL_LENGTH_MAX)
    reg = new_registry(registry, strict=strict, insecure=insecure, default_registry=default_registry)
    r = Repository(reg, repo)
    if r._implicit_namespace:
        if strict:
            raise _bad_name(name, "strict validation requires the full repository path (missing 'library')")
        _check_element(name, "repository", r.repository_str, _GGCR_REPO_CHARS, 1, NAME_TOTAL_LENGTH_MAX)
    return r


class TagReference:
    """A tagged reference (go-containerregistry ``name.Tag``).

    ``name`` is ``registry/repository:tag`` with defaults applied; ``str()`` is
    the original input. ``context`` is the :class:`Repository`."""

    __slots__ = ("context", "tag_str", "original")

    def __init__(self, context: Repository, tag_str: str, original: str):
        self.context = context
        self.tag_str = tag_str
        self.original = original

    identifier = property(lambda self: self.tag_str)
    registry_str = property(lambda self: self.context.registry_str)
    repository_str = property(lambda self: self.context.repository_str)
    scheme = property(lambda self: self.context.scheme)

    @property
    def name(self) -> str:
        return f"{self.context.name}:{self.tag_str}"

    def scope(self, action: str) -> str:
        return self.context.scope(action)

    def __str__(self):
        return self.original

    def __repr__(self):
        return f"TagReference({self.name!r})"

    def __eq__(self, other):
        return (isinstance(other, TagReference) and self.context == other.context
                and self.tag_str == other.tag_str and self.original == other.original)

    def __hash__(self):
        return hash((self.context, self.tag_str, self.original))


class DigestReference:
    """A digest reference (go-containerregistry ``name.Digest``).

    ``name`` is ``registry/repository@digest`` (a tag in the input is not part
    of it); ``str()`` is the original input."""

    __slots__ = ("context", "digest_str", "original")

    def __init__(self, context: Repository, digest_str: str, original: str):
        self.context = context
        self.digest_str = digest_str
        self.original = original

    identifier = property(lambda self: self.digest_str)
    registry_str = property(lambda self: self.context.registry_str)
    repository_str = property(lambda self: self.context.repository_str)
    scheme = property(lambda self: self.context.scheme)

    @property
    def name(self) -> str:
        return f"{self.context.name}@{self.digest_str}"

    def scope(self, action: str) -> str:
        return self.context.scope(action)

    def __str__(self):
        return self.original

    def __repr__(self):
        return f"DigestReference({self.name!r})"

    def __eq__(self, other):
        return (isinstance(other, DigestReference) and self.context == other.context
                and self.digest_str == other.digest_str and self.original == other.original)

    def __hash__(self):
        return hash((self.context, self.digest_str, self.original))


def new_tag(name: str, *, strict: bool = False, insecure: bool = False,
            default_registry: str = GGCR_DEFAULT_REGISTRY,
            default_tag: str = DEFAULT_TAG) -> TagReference:
    """go-containerregistry ``NewTag``.

    The text after the last ``:`` is the tag unless it contains ``/`` (then the
    colon belonged to a registry port). An empty tag after a colon is an
    error; a tag must be 1..128 characters of ``[A-Za-z0-9_.-]``. Without a tag
    ``default_tag`` is used (not allowed with ``strict``).
    Raises ReferenceError ``bad-name``."""
    if not isinstance(name, str):
        raise _bad_name(name, f"expected a string, got {type(name).__name__}")
    base, tag = name, ""
    parts = name.split(":")
    if len(parts) > 1 and "/" not in parts[-1]:
        base, tag = ":".join(parts[:-1]), parts[-1]
        if tag == "":
            raise _bad_name(name, f"{name} must specify a tag name after the colon")
    if tag or strict:
        _check_element(name, "tag", tag, _GGCR_TAG_CHARS, 1, 128)
    if not tag:
        tag = default_tag
    repo = new_repository(base, strict=strict, insecure=insecure, default_registry=default_registry)
    return TagReference(repo, tag, name)


def new_digest(name: str, *, strict: bool = False, insecure: bool = False,
               default_registry: str = GGCR_DEFAULT_REGISTRY) -> DigestReference:
    """go-containerregistry ``NewDigest``: exactly one ``@``, a ``sha256:`` +
    64 lowercase hex digest; a tag before the ``@`` is allowed and dropped
    from ``name`` (kept in ``str()``). Raises ReferenceError ``bad-name``."""
    if not isinstance(name, str):
        raise _bad_name(name, f"expected a string, got {type(name).__name__}")
    parts = name.split("@")
    if len(parts) != 2:
        raise _bad_name(name, "a digest must contain exactly one '@' separator "
                              f"(e.g. registry/repository@digest) saw: {name}")
    base, dig = parts
    if not dig.startswith("sha256:"):
        raise _bad_name(name, f"unsupported digest algorithm: {dig}")
    hex_part = dig[len("sha256:"):]
    if len(hex_part) != 64 or _IDENTIFIER_RE.fullmatch(hex_part) is None:
        raise _bad_name(name, f"digest {dig!r} must be sha256: followed by 64 lowercase hex digits")
    try:
        base = new_tag(base, strict=strict, insecure=insecure, default_registry=default_registry).context.name
    except ReferenceError:
        pass
    repo = new_repository(base, strict=strict, insecure=insecure, default_registry=default_registry)
    return DigestReference(repo, dig, name)


def parse_reference(text: str, *, strict: bool = False, insecure: bool = False,
                    default_registry: str = GGCR_DEFAULT_REGISTRY,
                    default_tag: str = DEFAULT_TAG):
    """go-containerregistry ``ParseReference``: a :class:`TagReference` if
    :func:`new_tag` accepts ``text``, else a :class:`DigestReference` if
    :func:`new_digest` does; raises ReferenceError ``bad-name``
    ("could not parse reference: ...") otherwise."""
    try:
        return new_tag(text, strict=strict, insecure=insecure,
                       default_registry=default_registry, default_tag=default_tag)
    except ReferenceError:
        pass
    try:
        return new_digest(text, strict=strict, insecure=insecure, default_registry=default_registry)
    except ReferenceError:
        pass
    raise _bad_name(text, f"could not parse reference: {text}")
