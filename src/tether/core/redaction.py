"""Secrets kept out of the journal: patterns, and redacting JSON values with them.

A secret that reaches the journal is in every backup and every audit export for
good (erasure is the cure, not the prevention). So the runtime redacts, before
anything is journaled: a model's response and a tool's result (before the step
sees them, live and on replay alike, so a secret a tool returns never reaches
the model), a tool's arguments (journaled redacted; the tool gets the real
value), what a step sends or writes to the blackboard (the store keeps only the
redacted form, so receivers and readers get it), and a run's goal, name and start
options. A run's state is not redacted: a resumed step must see what the live one
had (docs/audit.md, "Secrets in a run's state"). A match is replaced by
``[REDACTED:NAME]``, NAME being the pattern's.

Built-in patterns (:data:`BUILTIN`) cover common API keys and tokens; a policy's
``[redaction]`` table adds its own (``patterns = {name = "regex"}``). The built-ins
cannot be switched off by configuration: a missing or broken table never weakens
the guard (a broken one is refused when the policy is checked).

Cost: values are scanned whole by one combined expression first; only a value
that matches is walked and copied, so the common case (no secret) costs one
regex search per string.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any, Final

from tether.core.canonical import dumps

BUILTIN: Final[dict[str, str]] = {
    # Anthropic before OpenAI: both start with "sk-".
    "anthropic_key": r"\bsk-ant-[A-Za-z0-9_\-]{20,}",
    "openai_key": r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
    "aws_access_key_id": r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
    "aws_secret_access_key": r"(?i)\baws_?secret_?access_?key\b[\"']?\s*[:=]\s*[\"']?"
                             r"[A-Za-z0-9/+=]{40}\b",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})\b",
    "slack_token": r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    "slack_webhook": r"https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]{20,}",
    "jwt": r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    "private_key": r"-----BEGIN[A-Z ]{0,20} PRIVATE KEY( BLOCK)?-----[\s\S]*?"
                   r"-----END[A-Z ]{0,20} PRIVATE KEY( BLOCK)?-----",
    "bearer_token": r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{20,}=*",
}
"""Name -> regular expression. Lengths are chosen so that ordinary words, ids and
hashes do not match (a 64-hex digest has no prefix any of these need)."""

_TRIGGERS: Final = ("sk-", "AKIA", "ASIA", "ABIA", "ACCA", "ghp_", "gho_", "ghu_", "ghs_",
                    "ghr_", "github_pat_", "xox", "hooks.slack.com", "eyJ", "PRIVATE KEY")
_TRIGGERS_ANY_CASE: Final = ("bearer", "aws")
"""Every built-in pattern needs one of these literally (the second set in any case): a
string with none of them is not searched at all. A combined regular expression tries
each of its alternatives at every position (about 100 µs for a 1 KB string here);
these are C substring scans (about 1 µs)."""


class RedactionError(ValueError):
    """A ``[redaction]`` table that cannot be used (names the pattern)."""


class Redactor:
    """Replaces what any of its patterns match in a JSON value's strings."""

    __slots__ = ("_any", "_extra", "_names", "patterns")

    def __init__(self, extra: Mapping[str, str] | None = None) -> None:
        self.patterns: dict[str, str] = {**BUILTIN, **(extra or {})}
        self._extra = bool(extra)
        """Patterns of the policy's own: no literal is known to trigger them."""
        """Every pattern in force, built-ins first."""
        groups: list[str] = []
        self._names: list[str] = []
        for name, pattern in self.patterns.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise RedactionError(f"[redaction] pattern {name!r}: not a regular "
                                     f"expression ({exc}); fix it or remove it") from None
            # Each pattern is its own named group of one alternation, so one search finds
            # the first secret of any kind; inline flags stay local to their group.
            flags, body = _split_flags(pattern)
            groups.append(f"(?P<g{len(groups)}>{f'(?{flags}:' if flags else '(?:'}{body}))")
            self._names.append(name)
        self._any = re.compile("|".join(groups))

    def redact(self, value: Any) -> Any:
        """``value`` with every match replaced; the very same object when nothing matched
        (callers test ``is`` to know whether anything was redacted)."""
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, dict):
            out = None
            for k, v in value.items():
                r = self.redact(v)
                if r is not v:
                    out = dict(value) if out is None else out
                    out[k] = r
            return value if out is None else out
        if isinstance(value, list | tuple):
            items = [self.redact(v) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return type(value)(items) if isinstance(value, tuple) else items
        return value

    def _text(self, text: str) -> str:
        if not self._extra and not any(t in text for t in _TRIGGERS):
            low = text.lower()
            if not any(t in low for t in _TRIGGERS_ANY_CASE):
                return text
        # One pass (subn), not a search then a sub: the alternation is tried at every
        # position, so a text with a trigger but no secret costs one scan, a secret one too.
        out, n = self._any.subn(self._mark, text)
        return text if n == 0 else out

    def _mark(self, m: re.Match[str]) -> str:
        name = self._names[int(str(m.lastgroup)[1:])]
        return f"[REDACTED:{name}]"


def keyed_digest(key: bytes, value: Any) -> str:
    """HMAC-SHA256 of ``value``'s canonical JSON: a call's fingerprint when its arguments
    held a secret (the journal keeps the redacted arguments and this, never a plain hash
    a secret could be guessed back from)."""
    return hmac.new(key, dumps(value), hashlib.sha256).hexdigest()


def _split_flags(pattern: str) -> tuple[str, str]:
    """A leading ``(?i)``-style flag group, which Python allows only at the start of the
    whole expression, moved into a scoped group ``(?i:...)``."""
    m = re.match(r"^\(\?([aiLmsux]+)\)", pattern)
    return (m.group(1), pattern[m.end():]) if m else ("", pattern)


def compile_redaction(table: Any) -> Redactor:
    """The redactor a policy's ``[redaction]`` table asks for (the built-ins only when
    there is none). Raises RedactionError naming what is wrong."""
    if table is None:
        return DEFAULT
    if not isinstance(table, dict):
        raise RedactionError("[redaction] must be a table, e.g. [redaction] patterns = "
                             '{ internal_token = "tok_[a-z0-9]{24}" }')
    unknown = sorted(set(table) - {"patterns"})
    if unknown:
        raise RedactionError(f"[redaction] {unknown[0]}: unknown key; the table takes "
                             "patterns = { NAME = \"REGEX\" } (the built-ins are always on)")
    patterns = table.get("patterns", {})
    if not isinstance(patterns, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in patterns.items()):
        raise RedactionError("[redaction] patterns: give a table of NAME = \"REGEX\" "
                             "(non-empty strings)")
    clash = sorted(set(patterns) & set(BUILTIN))
    if clash:
        raise RedactionError(f"[redaction] patterns.{clash[0]}: a built-in pattern has that "
                             "name and cannot be replaced; choose another name")
    out = Redactor(patterns)  # refuses a pattern that is not a regular expression
    for name, p in patterns.items():
        if re.fullmatch(p, ""):  # would match everywhere: every string becomes a marker
            raise RedactionError(f"[redaction] pattern {name!r} matches the empty string; "
                                 "make it match only the secret")
    return out


DEFAULT: Final = Redactor()
"""The built-in patterns only: what every run gets without a ``[redaction]`` table."""
