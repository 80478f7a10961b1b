"""Regenerate ``flagger_messages.json``: every Event message format of every Flagger release.

Usage::

    .venv/bin/python tests/normalise/extract_flagger_messages.py --git-dir PATH [--check]

``PATH`` is a clone of ``github.com/fluxcd/flagger`` with its tags (bare or not). For every
release tag the script reads Flagger's Go sources under ``pkg/`` (tests, generated clients and
``vendor/`` excluded) straight from git and finds every call of the event helpers
``recordEventInfof`` (type Normal), ``recordEventWarningf`` and ``recordEventErrorf`` (type
Warning). These three have been the only callers of the event recorder since 0.0.1.

The format argument is taken as written. Where it is only a verb (``"%v", err`` or
``"%s", msg``), or where a ``%s`` names a local string (``msg`` in 0.x's
``"Halt %s.%s advancement %s"``), the value is followed to where it is made, and each way it can
be made becomes a format of its own:

- a local assignment: the last one before the use, and earlier ones while the last sits in a
  block that does not enclose the use;
- ``fmt.Errorf``/``fmt.Sprintf``/``errors.New``/string literals, with their own ``%w``/``%v``
  arguments followed the same way (``"%s.%s not ready: %w"`` becomes one format per readiness
  reason);
- a call of a function or method of Flagger itself: its ``return`` statements (the result at the
  same position), by name. A method called on an interface (``meshRouter.Reconcile``) is every
  method of that name in ``pkg/``, so the set is a slight over-approximation;
- package-level error variables (``providers.ErrNoValuesFound``);
- a call taking a function literal (``retry.RetryOnConflict(…, func() error {…})``): the
  literal's returns.

Formats that already carry text around a ``%v`` (``"Prometheus query failed: %v"``) are kept
as they are: their prefix decides what they mean, whatever error fills them.

Where a value cannot be followed (an error of client-go, the Kubernetes API or another module,
a function parameter, an expression that is not one of the shapes above) the verb stays in the
format, and the place is counted under ``stops`` in the output. A bare ``"%v", err`` whose error
comes straight from another module is the row ``%v``.

Conditions are not evaluated: ``first``/``last`` say in which releases the format is *reachable*
in the source. Where a guard keeps it from ever being recorded (the scheduler recorded
``IsCanaryReady`` errors only when retriable until v1.36.0, for instance) the row's
``transition`` is ``not-emitted`` and its ``why`` says so; where a guard narrows the range, the
``why`` gives the real one.

What each format *means* (``transition``: a transition of ``reference/transitions.md``,
``informational``, ``ignored`` or ``not-emitted``; ``why``) is human judgement and survives
regeneration: it is copied from the existing table by ``(format, type)``. A format the table
did not have gets ``transition: null`` and ``review: true``, which fails
``tests/normalise/test_flagger_messages.py`` until someone decides; a format no longer extracted
is dropped and printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("flagger_messages.json")

HELPERS = {
    "recordEventInfof": "Normal",
    "recordEventWarningf": "Warning",
    "recordEventErrorf": "Warning",
}
_SITE = re.compile(r"\.(recordEvent(?:Info|Warning|Error)f)\s*\(")
_FUNC = re.compile(r"(?m)^func\s*(?:\((?P<recv>[^)]*)\)\s*)?(?P<name>\w+)\s*(?:\[[^\]]*\]\s*)?\(")
_FUNC_LIT = re.compile(r"\bfunc\s*\(")
_RETURN = re.compile(r"\breturn\b")
_VERB = re.compile(r"%(?:%|[-+# 0]*(?:\d+|\*)?(?:\.(?:\d+|\*)?)?[a-zA-Z])")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_ERRORISH = re.compile(r"^(?:e|er|err|\w*[Ee]rr(?:or)?\w*)$")
_CALL = re.compile(r"(?P<path>[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)\s*\($")
_MAKERS = {"fmt.Errorf", "fmt.Sprintf", "errors.New", "errors.Errorf"}
_CLIENT_VERBS = {
    "Get",
    "List",
    "Create",
    "Update",
    "UpdateStatus",
    "Delete",
    "DeleteCollection",
    "Patch",
    "Watch",
    "Do",
    "Error",
    "String",
}
"""Method names that, on a selector chain, are client-go's or the standard library's."""
MAX_DEPTH = 60
KEEP = "\x00"
"""A value that could not be followed: the verb that receives it stays in the format."""
MODULE_PATHS = re.compile(r"^github\.com/(?:stefanprodan|weaveworks|fluxcd)/flagger/(pkg/.+)$")


# --------------------------------------------------------------------------------------- git


class Git:
    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir
        self._blobs: dict[str, str] = {}
        self._batch = subprocess.Popen(
            ["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(self.git_dir), *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def tags(self) -> list[str]:
        return sorted((t for t in self.run("tag").split() if _version(t)), key=_version_key)

    def go_files(self, tag: str) -> list[tuple[str, str]]:
        """``(path, blob)`` of the Go sources that can record an Event."""
        out = []
        for line in self.run("ls-tree", "-r", tag).splitlines():
            meta, path = line.split("\t", 1)
            blob = meta.split()[2]
            if (
                path.startswith("pkg/")
                and path.endswith(".go")
                and not path.endswith("_test.go")
                and not path.startswith(("pkg/client/", "pkg/apis/"))
                and "zz_generated" not in path
                and "/vendor/" not in path
            ):
                out.append((path, blob))
        return out

    def blob(self, sha: str) -> str:
        if sha not in self._blobs:
            assert self._batch.stdin is not None
            assert self._batch.stdout is not None
            self._batch.stdin.write(sha.encode() + b"\n")
            self._batch.stdin.flush()
            header = self._batch.stdout.readline().split()
            size = int(header[2])
            data = self._batch.stdout.read(size + 1)[:size]
            self._blobs[sha] = data.decode("utf-8", "replace")
        return self._blobs[sha]

    def close(self) -> None:
        assert self._batch.stdin is not None
        self._batch.stdin.close()
        self._batch.wait()


_TAG = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?$")


def _version(tag: str) -> re.Match[str] | None:
    return _TAG.match(tag)


def _version_key(tag: str) -> tuple[Any, ...]:
    """Semantic-version order: a pre-release sorts before its release."""
    m = _TAG.match(tag)
    assert m is not None
    pre: tuple[Any, ...] = (1,)
    if m[4]:
        pre = (0, *((0, int(p), "") if p.isdigit() else (1, 0, p) for p in m[4].split(".")))
    return (int(m[1]), int(m[2]), int(m[3]), pre)


# ------------------------------------------------------------------------------------ Go text

_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
}


def _unquote(body: str) -> str:
    """The value of a Go interpreted string literal's body."""
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "x":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        elif nxt == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif nxt == "U":
            out.append(chr(int(body[i + 2 : i + 10], 16)))
            i += 10
        else:
            out.append(chr(int(body[i + 1 : i + 4], 8)))
            i += 4
    return "".join(out)


@dataclasses.dataclass
class Func:
    file: GoFile
    name: str
    receiver: bool
    recv_var: str
    recv_type: str
    start: int
    """Offset of the body's ``{``."""
    end: int
    """Offset of the body's ``}``."""

    @property
    def label(self) -> str:
        return f"{self.file.path}:{self.name}"


class GoFile:
    """One Go source: comments blanked, string contents masked (same offsets), functions."""

    def __init__(self, path: str, src: str) -> None:
        self.path = path
        self.dir = path.rsplit("/", 1)[0]
        self.strings: dict[int, str] = {}
        self.code = self._mask(src)
        self.imports = self._imports()
        self.funcs = self._funcs()
        self.package_vars = self._package_vars()

    def _mask(self, src: str) -> str:
        out = list(src)
        i, n = 0, len(src)
        while i < n:
            ch = src[i]
            if src.startswith("//", i):
                j = src.find("\n", i)
                j = n if j < 0 else j
                out[i:j] = " " * (j - i)
                i = j
            elif src.startswith("/*", i):
                j = src.find("*/", i + 2)
                j = n if j < 0 else j + 2
                out[i:j] = ["\n" if c == "\n" else " " for c in src[i:j]]
                i = j
            elif ch == "`":
                j = src.find("`", i + 1)
                self.strings[i] = src[i + 1 : j]
                out[i + 1 : j] = ["\n" if c == "\n" else "_" for c in src[i + 1 : j]]
                i = j + 1
            elif ch in "\"'":
                j = i + 1
                while src[j] != ch:
                    j += 2 if src[j] == "\\" else 1
                if ch == '"':
                    self.strings[i] = _unquote(src[i + 1 : j])
                out[i + 1 : j] = "_" * (j - i - 1)
                i = j + 1
            else:
                i += 1
        return "".join(out)

    def _imports(self) -> dict[str, str]:
        """alias → in-repo package directory (``pkg/…``), or ``""`` for another module's."""
        found: dict[str, str] = {}
        for m in re.finditer(r"(?m)^\s*(?:import\s+)?(?P<alias>[\w.]+\s+)?(?P<q>\")", self.code):
            path = self.strings.get(m.start("q"), "")
            if not path or m.start() > self.code.find("\nfunc "):
                continue
            pkg = MODULE_PATHS.match(path)
            default = re.sub(r"\.v\d+$", "", path.rsplit("/", 1)[-1])
            alias = (m["alias"] or "").strip() or default
            found[alias] = pkg[1] if pkg else ""
        return found

    def _funcs(self) -> list[Func]:
        funcs = []
        for m in _FUNC.finditer(self.code):
            params_end = close_bracket(self.code, m.end() - 1)
            body = body_brace(self.code, params_end + 1)
            if body is None:
                continue
            recv = (m["recv"] or "").replace("*", " ").split()
            recv_var, recv_type = (recv[0], recv[-1]) if len(recv) == 2 else ("", "".join(recv))
            end = close_bracket(self.code, body)
            funcs.append(Func(self, m["name"], bool(m["recv"]), recv_var, recv_type, body, end))
        return funcs

    def _package_vars(self) -> dict[str, tuple[int, int]]:
        """Package-level ``Name = <expr>`` → span of the expression (errors.New and the like)."""
        spans: dict[str, tuple[int, int]] = {}
        inside = [(f.start, f.end) for f in self.funcs]
        for m in re.finditer(r"(?m)^\s*(?:var\s+)?(\w+)\s*(?:error\s*)?=\s*(?=\w)", self.code):
            if any(a <= m.start() <= b for a, b in inside):
                continue
            end = expression_end(self.code, m.end())
            spans[m[1]] = (m.end(), end)
        return spans

    def literal(self, start: int, end: int) -> str | None:
        """The value of a string literal (or ``+`` of literals) spanning ``[start, end)``."""
        text = self.code[start:end].strip()
        offset = start + (len(self.code[start:end]) - len(self.code[start:end].lstrip()))
        parts: list[str] = []
        i = 0
        while i < len(text):
            if text[i] in '"`' and offset + i in self.strings:
                parts.append(self.strings[offset + i])
                j = text.index(text[i], i + 1)
                i = j + 1
            elif text[i] in " \t\n+":
                i += 1
            else:
                return None
        return "".join(parts) if parts else None


def close_bracket(code: str, i: int) -> int:
    """Offset of the bracket closing the one at ``i`` (strings are masked already)."""
    depth = 0
    for j in range(i, len(code)):
        ch = code[j]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


def body_brace(code: str, i: int) -> int | None:
    """The ``{`` opening a function body after its parameter list (skips result types)."""
    j = i
    while j < len(code):
        ch = code[j]
        if ch in "([":
            j = close_bracket(code, j) + 1
        elif ch == "{":
            if re.search(r"(?:interface|struct)\s*$", code[i:j]):
                j = close_bracket(code, j) + 1
                continue
            return j
        elif ch == "\n" and not code[i:j].strip():
            j += 1
        elif ch == "\n":
            # A declaration without a body (assembly stubs) ends at the line.
            if not code[i:j].rstrip().endswith((",", "(")):
                nxt = code[j:].lstrip()
                if not nxt.startswith("{"):
                    return None
            j += 1
        else:
            j += 1
    return None


def expression_end(code: str, i: int) -> int:
    """End of the expression starting at ``i``: a top-level ``,``, ``;``, newline or closer."""
    j = i
    while j < len(code):
        ch = code[j]
        if ch in "([{":
            j = close_bracket(code, j) + 1
            continue
        if ch in ",;)]}":
            return j
        if ch == "\n":
            before = code[i:j].rstrip()
            if before and before[-1] not in "+-*/&|.,(":
                return j
        j += 1
    return j


def split_args(code: str, open_paren: int) -> list[tuple[int, int]]:
    """Spans of the top-level arguments of the call whose ``(`` is at ``open_paren``."""
    close = close_bracket(code, open_paren)
    spans, start, j = [], open_paren + 1, open_paren + 1
    while j < close:
        ch = code[j]
        if ch in "([{":
            j = close_bracket(code, j) + 1
            continue
        if ch == ",":
            spans.append((start, j))
            start = j + 1
        j += 1
    if code[start:close].strip():
        spans.append((start, close))
    return [(a + len(code[a:b]) - len(code[a:b].lstrip()), b) for a, b in spans]


def verbs(fmt: str) -> list[re.Match[str]]:
    return [m for m in _VERB.finditer(fmt) if m[0] != "%%"]


# ------------------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True)
class Value:
    """One way a message (or part of one) can be made: a format and the Go expression per verb."""

    fmt: str
    args: tuple[str, ...]
    via: tuple[str, ...] = ()


@dataclasses.dataclass
class Stop:
    kind: str
    where: str
    expr: str


class Tree:
    """One release: its Go files and an index of functions by name."""

    def __init__(self, files: Sequence[GoFile]) -> None:
        self.files = files
        self.methods: dict[str, list[Func]] = defaultdict(list)
        self.functions: dict[tuple[str, str], list[Func]] = defaultdict(list)
        self.package_vars: dict[tuple[str, str], tuple[GoFile, int, int]] = {}
        for f in files:
            for fn in f.funcs:
                if fn.receiver:
                    self.methods[fn.name].append(fn)
                else:
                    self.functions[(f.dir, fn.name)].append(fn)
            for name, (a, b) in f.package_vars.items():
                self.package_vars[(f.dir, name)] = (f, a, b)
        self.stops: list[Stop] = []
        self._memo: dict[tuple[int, int, int, bool], tuple[Value, ...]] = {}

    # -- where a value comes from ------------------------------------------------------------

    def enclosing(self, f: GoFile, pos: int) -> Func | None:
        best = None
        for fn in f.funcs:
            if fn.start <= pos <= fn.end and (best is None or fn.start > best.start):
                best = fn
        return best

    def resolve_call(self, f: GoFile, pos: int, path: str) -> list[Func]:
        """Flagger's own functions a call path may reach, by name.

        ``c.name(…)`` on the enclosing method's receiver is that type's method; other method
        calls (interfaces) reach every method of that name, preferring the caller's package.
        """
        parts = [p.strip() for p in path.split(".")]
        name = parts[-1]
        if len(parts) == 1:
            return self.functions.get((f.dir, name), [])
        if len(parts) == 2 and parts[0] in f.imports:
            package = f.imports[parts[0]]
            return self.functions.get((package, name), []) if package else []
        if name in _CLIENT_VERBS and len(parts) > 2:
            return []
        methods = self.methods.get(name, [])
        caller = self.enclosing(f, pos)
        if caller is not None and len(parts) == 2 and parts[0] == caller.recv_var:
            own = [m for m in methods if (m.file.dir, m.recv_type) == (f.dir, caller.recv_type)]
            if own:
                return own
        same = [m for m in methods if m.file.dir == f.dir]
        return same or methods

    def evaluate(
        self, f: GoFile, start: int, end: int, index: int, count: int, depth: int, *, full: bool
    ) -> tuple[Value, ...] | None:
        """The values the expression ``[start, end)`` can take (``None``: cannot follow).

        ``index``/``count``: the result wanted when the expression is a call with ``count``
        results. ``full``: also follow ``%v`` arguments of formats found on the way.
        """
        code = f.code
        text = code[start:end].strip()
        start += len(code[start:end]) - len(code[start:end].lstrip())
        end = start + len(text)
        if not text:
            return None
        lit = f.literal(start, end)
        if lit is not None:
            return (Value(lit.replace("%", "%%"), ()),)
        if text == "nil":
            return ()
        if depth > MAX_DEPTH:
            self.stops.append(Stop("depth", f.path, text))
            return None
        if text.endswith(".Error()"):
            return self.evaluate(f, start, end - len(".Error()"), index, count, depth, full=full)
        if _IDENT.fullmatch(text):
            return self.ident(f, text, start, index, count, depth, full=full)
        m = re.fullmatch(r"([A-Za-z_]\w*)\s*\.\s*([A-Za-z_]\w*)", text)
        if m and f.imports.get(m[1]) and (f.imports[m[1]], m[2]) in self.package_vars:
            g, a, b = self.package_vars[(f.imports[m[1]], m[2])]
            return self.evaluate(g, a, b, 0, 1, depth + 1, full=full)
        if text.endswith(")"):
            open_paren = self._call_open(code, start, end)
            if open_paren is not None:
                return self.call(f, start, open_paren, index, count, depth, full=full)
        self.stops.append(Stop("expression", f.path, " ".join(text.split())[:80]))
        return None

    @staticmethod
    def _call_open(code: str, start: int, end: int) -> int | None:
        """The ``(`` of a call spanning ``[start, end)`` (the last call of a selector chain)."""
        j = end - 1
        depth = 0
        while j >= start:
            ch = code[j]
            if ch in ")]}":
                depth += 1
            elif ch in "([{":
                depth -= 1
                if depth == 0:
                    return j if ch == "(" else None
            j -= 1
        return None

    def call(
        self,
        f: GoFile,
        start: int,
        open_paren: int,
        index: int,
        count: int,
        depth: int,
        *,
        full: bool,
    ) -> tuple[Value, ...] | None:
        code = f.code
        head = code[start:open_paren] + "("
        m = _CALL.search(head)
        if m is None or m.start() != 0:
            # ``x.Get(…).Foo(…)`` and other chains go through another module's objects.
            self.stops.append(Stop("external", f.path, " ".join(head.split())[:80]))
            return None
        path = re.sub(r"\s+", "", m["path"])
        args = split_args(code, open_paren)
        if path in _MAKERS:
            return self.format_call(f, args, depth, full=full)
        lits = [a for a in args if code[a[0] : a[1]].lstrip().startswith("func")]
        if lits:
            body = code.index("{", lits[-1][0])
            end = close_bracket(code, body)
            fn = Func(f, f"{path}(func literal)", False, "", "", body, end)
            return self.returns(fn, 0, 1, depth + 1, full=full)
        funcs = self.resolve_call(f, start, path)
        if not funcs:
            self.stops.append(Stop("external", f.path, path))
            return None
        out: list[Value] = []
        for fn in funcs:
            for v in self.returns(fn, index, count, depth + 1, full=full):
                out.append(dataclasses.replace(v, via=(fn.label, *v.via)))
        return tuple(out)

    def format_call(
        self, f: GoFile, args: list[tuple[int, int]], depth: int, *, full: bool
    ) -> tuple[Value, ...] | None:
        if not args:
            return None
        template = self.evaluate(f, *args[0], 0, 1, depth + 1, full=full)
        if not template:
            return None
        out: list[Value] = []
        for t in template:
            fmt = t.fmt if f.literal(*args[0]) is None else t.fmt.replace("%%", "%")
            out.extend(self.expand(f, fmt, args[1:], depth, full=full, via=t.via))
        return tuple(out)

    def expand(
        self,
        f: GoFile,
        fmt: str,
        args: Sequence[tuple[int, int]],
        depth: int,
        *,
        full: bool,
        via: tuple[str, ...] = (),
    ) -> list[Value]:
        """``fmt`` with each followable argument's values in place of its verb."""
        found = verbs(fmt)
        results = [Value("", (), via)]
        pos = 0
        for k, vm in enumerate(found):
            lit = fmt[pos : vm.start()]
            pos = vm.end()
            expr = " ".join(f.code[args[k][0] : args[k][1]].split()) if k < len(args) else "?"
            inner: tuple[Value, ...] | None = None
            literal = f.literal(*args[k]) if k < len(args) else None
            if literal is not None and vm[0] in ("%s", "%v"):
                inner = (Value(literal.replace("%", "%%"), ()),)
            elif k < len(args) and self._followable(vm[0], expr, full=full):
                inner = self.evaluate(f, *args[k], 0, 1, depth + 1, full=full)
            if not inner:
                inner = (Value(vm[0], (expr,)),)
            inner = tuple(Value(vm[0], i.args, i.via) if i.fmt == KEEP else i for i in inner)
            results = [
                Value(r.fmt + lit + i.fmt, r.args + i.args, r.via + i.via)
                for r in results
                for i in inner
            ]
        return [Value(r.fmt + fmt[pos:], r.args, r.via) for r in results]

    @staticmethod
    def _followable(verb: str, expr: str, *, full: bool) -> bool:
        """Errors are followed only under a bare verb (``full``); strings under ``%s`` always."""
        name = expr.removesuffix(".Error()")
        if not _IDENT.fullmatch(name) and not re.fullmatch(r"\w+\.Err\w+", name):
            return False
        if _ERRORISH.match(name) or "." in name:
            return full and verb in ("%v", "%s", "%w")
        return verb == "%s"

    def ident(
        self, f: GoFile, name: str, pos: int, index: int, count: int, depth: int, *, full: bool
    ) -> tuple[Value, ...] | None:
        fn = self.enclosing(f, pos)
        assignments = self.assignments(f, fn, name, pos) if fn else []
        if not assignments:
            if (f.dir, name) in self.package_vars:
                g, a, b = self.package_vars[(f.dir, name)]
                return self.evaluate(g, a, b, 0, 1, depth + 1, full=full)
            self.stops.append(Stop("parameter", fn.label if fn else f.path, name))
            return None
        out: list[Value] = []
        followed = False
        for a, b, idx, n in assignments:
            values = self.evaluate(f, a, b, idx, n, depth + 1, full=full)
            if values is None:
                out.append(Value(KEEP, (" ".join(f.code[a:b].split()),)))
            else:
                followed = True
                out.extend(values)
        return tuple(out) if followed else None

    def assignments(
        self, f: GoFile, fn: Func, name: str, pos: int
    ) -> list[tuple[int, int, int, int]]:
        """``(rhs start, rhs end, result index, result count)`` of the assignments of ``name``
        that can reach ``pos``: the last one, and earlier ones while the later sit in blocks that
        do not enclose ``pos``."""
        code = f.code
        lhs = re.compile(
            rf"(?:(?<=[\s;{{(])|^)(?:var\s+)?((?:[\w.]+\s*,\s*)*\b{name}\b(?:\s*,\s*[\w.]+)*)"
            rf"\s*(?:\s(?:error|string))?\s*(:?=)(?!=)"
        )
        found = list(lhs.finditer(code, fn.start, pos))
        out: list[tuple[int, int, int, int]] = []
        for m in reversed(found):
            names = [n.strip() for n in m[1].split(",")]
            rhs_start = m.end()
            values = self._rhs_spans(code, rhs_start)
            idx = names.index(name)
            if len(values) == len(names):
                out.append((*values[idx], 0, 1))
            else:
                out.append((values[0][0], values[-1][1], idx, len(names)))
            if self._encloses(code, fn, m.start(), pos):
                break
        return out

    @staticmethod
    def _rhs_spans(code: str, start: int) -> list[tuple[int, int]]:
        spans = []
        j = start
        while True:
            end = expression_end(code, j)
            spans.append((j, end))
            if end < len(code) and code[end] == ",":
                j = end + 1
                continue
            return spans

    @staticmethod
    def _encloses(code: str, fn: Func, at: int, pos: int) -> bool:
        """Whether the innermost block holding ``at`` still holds ``pos``."""
        depth = 0
        for j in range(at - 1, fn.start, -1):
            ch = code[j]
            if ch == "}":
                depth += 1
            elif ch == "{":
                if depth == 0:
                    return close_bracket(code, j) >= pos
                depth -= 1
        return True

    def returns(
        self, fn: Func, index: int, count: int, depth: int, *, full: bool
    ) -> tuple[Value, ...]:
        key = (id(fn.file), fn.start, index, full)
        if key in self._memo:
            return self._memo[key]
        self._memo[key] = ()  # recursion guard
        code = fn.file.code
        nested = [
            (m.start(), close_bracket(code, code.index("{", close_bracket(code, m.end() - 1))))
            for m in _FUNC_LIT.finditer(code, fn.start + 1, fn.end)
        ]
        out: list[Value] = []
        for m in _RETURN.finditer(code, fn.start, fn.end):
            if any(a < m.start() < b for a, b in nested):
                continue
            spans = self._rhs_spans(code, m.end())
            if len(spans) == 1 and not code[spans[0][0] : spans[0][1]].strip():
                continue
            if len(spans) == count:
                a, b = spans[index]
                values = self.evaluate(fn.file, a, b, 0, 1, depth, full=full)
            elif len(spans) == 1:
                values = self.evaluate(fn.file, *spans[0], index, count, depth, full=full)
            else:
                continue
            if values is None:
                expr = " ".join(code[spans[min(index, len(spans) - 1)][0] : spans[-1][1]].split())
                values = (Value(KEEP, (expr,)),)
            out.extend(values)
        result = tuple(dict.fromkeys(out))
        self._memo[key] = result
        return result


# ------------------------------------------------------------------------------ extraction


@dataclasses.dataclass
class Found:
    type: str
    fmt: str
    args: tuple[str, ...]
    sites: set[tuple[str, ...]]
    """Call chains: the function recording the Event, then each function the text came through."""


def extract(tree: Tree) -> dict[tuple[str, str], Found]:
    """Every ``(format, type)`` one release can record, with where it is recorded."""
    out: dict[tuple[str, str], Found] = {}
    for f in tree.files:
        for m in _SITE.finditer(f.code):
            fn = tree.enclosing(f, m.start())
            if fn is None or fn.name in HELPERS:
                continue
            event_type = HELPERS[m[1]]
            args = split_args(f.code, m.end() - 1)
            if len(args) < 2:
                continue
            fmt_span, rest = args[1], args[2:]
            bare = f.literal(*fmt_span)
            template: tuple[Value, ...]
            if bare is not None:
                template = (Value(bare, ()),)
            else:
                template = tree.evaluate(f, *fmt_span, 0, 1, 0, full=True) or (
                    Value("%v", (f.code[fmt_span[0] : fmt_span[1]],)),
                )
            for t in template:
                is_bare = _VERB.fullmatch(t.fmt.strip()) is not None
                values = tree.expand(f, t.fmt, rest, 0, full=is_bare, via=t.via)
                for v in values:
                    key = (v.fmt, event_type)
                    found = out.setdefault(key, Found(event_type, v.fmt, v.args, set()))
                    found.sites.add((fn.label, *v.via))
    return out


def load_tree(git: Git, tag: str, cache: dict[str, GoFile]) -> Tree:
    files = []
    for path, blob in git.go_files(tag):
        key = f"{blob}:{path}"
        if key not in cache:
            cache[key] = GoFile(path, git.blob(blob))
        files.append(cache[key])
    return Tree(files)


# ------------------------------------------------------------------------------------ table


def build(git: Git, tags: Sequence[str], previous: dict[str, Any]) -> dict[str, Any]:
    cache: dict[str, GoFile] = {}
    seen: dict[tuple[str, str], list[str]] = defaultdict(list)
    latest: dict[tuple[str, str], Found] = {}
    stops: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for tag in tags:
        tree = load_tree(git, tag, cache)
        for key, found in extract(tree).items():
            seen[key].append(tag)
            latest[key] = found
        for s in {(s.kind, s.where, s.expr) for s in tree.stops}:
            stops[s].append(tag)
        print(f"{tag}: {sum(1 for k in seen if seen[k][-1] == tag)} formats", file=sys.stderr)

    judged = {(r["format"], r["type"]): r for r in previous.get("formats", [])}
    rows = []
    for key in sorted(seen, key=lambda k: (k[0].lower(), k[0], k[1])):
        fmt, event_type = key
        found = latest[key]
        present = seen[key]
        row: dict[str, Any] = {
            "format": fmt,
            "type": event_type,
            "first": present[0],
            "last": present[-1],
        }
        missing = [
            t for t in tags[tags.index(present[0]) : tags.index(present[-1])] if t not in present
        ]
        if missing:
            row["missing_in"] = missing
        old = judged.get(key)
        if old is not None and old.get("transition") is not None:
            row["transition"] = old["transition"]
            row["why"] = old.get("why", "")
            row["review"] = bool(old.get("review", False))
        else:
            row["transition"] = None
            row["why"] = ""
            row["review"] = True
        row["args"] = [a if len(a) <= 60 else a[:59] + "…" for a in found.args]
        row["recorded_in"] = sorted({chain[0] for chain in found.sites})
        made_in = sorted({chain[-1] for chain in found.sites if len(chain) > 1})
        if made_in:
            row["made_in"] = made_in
        rows.append(row)
    dropped = sorted(set(judged) - set(seen))
    for fmt, event_type in dropped:
        print(f"no longer extracted: {event_type} {fmt!r}", file=sys.stderr)

    by_kind: dict[str, int] = defaultdict(int)
    newest = tags[-1]
    newest_stops = []
    for (kind, where, expr), present in stops.items():
        by_kind[kind] += 1
        if present[-1] == newest:
            newest_stops.append(f"{kind}: {where}: {expr}")
    return {
        "about": (
            "Every Kubernetes Event message format of every Flagger release, and what canarywatch "
            "makes of it. Regenerate with tests/normalise/extract_flagger_messages.py; "
            "'transition' and 'why' are human judgement kept across regenerations."
        ),
        "repository": "github.com/fluxcd/flagger",
        "tags": list(tags),
        "formats": rows,
        "stops": {
            "about": (
                "Places where a value reaching an Event was not followed further (its verb stays "
                "in the format): distinct places over all releases by kind (external: a call "
                "into client-go, the Kubernetes API, the standard library or another module; "
                "parameter: a function parameter; expression: a field, number or other "
                "expression that is not a text Flagger makes), and the list for the newest tag."
            ),
            "counts": dict(sorted(by_kind.items())),
            "newest_tag": newest,
            "newest": sorted(newest_stops),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--git-dir", type=Path, required=True, help="Flagger's git repository")
    parser.add_argument("--output", type=Path, default=TABLE, help=f"default: {TABLE}")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the table would change; write nothing"
    )
    parser.add_argument("--tags", nargs="*", help="only these tags (for debugging)")
    args = parser.parse_args(argv)
    git_dir = args.git_dir
    if (git_dir / ".git").is_dir():
        git_dir = git_dir / ".git"
    git = Git(git_dir)
    try:
        tags = git.tags()
        if args.tags:
            tags = [t for t in tags if t in set(args.tags)]
        previous = json.loads(args.output.read_text()) if args.output.exists() else {}
        table = build(git, tags, previous)
    finally:
        git.close()
    text = json.dumps(table, indent=1, ensure_ascii=False) + "\n"
    review = sum(1 for r in table["formats"] if r["review"])
    print(
        f"{len(tags)} tags, {len(table['formats'])} formats, {review} to review",
        file=sys.stderr,
    )
    if args.check:
        return 0 if args.output.exists() and args.output.read_text() == text else 1
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
