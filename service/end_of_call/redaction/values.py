"""Value detectors: a string is secret because of what it looks like, whatever its key.

Known token formats come from detect-secrets' plugins (AWS, Stripe, Slack, GitHub, GitLab, JWT,
SendGrid, Twilio, Telegram, Discord, private keys, ...): their patterns, compiled once and run
over each string, so a secret pasted into a prompt or stored under an innocent name is found too.
Around them: formats those plugins miss (OpenAI `sk-proj-`, Stripe test keys, Google API keys),
authorization schemes (`Bearer x`, `Bearer: x`), connection strings (`Password=...;`) and
standalone high-entropy strings.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import re
from collections import Counter
from functools import cache

from service.end_of_call.redaction.keys import KeyRules

REDACTED = "[REDACTED]"

# Plugins whose patterns need a keyword context or match ordinary text (the key rules and the
# patterns below cover their cases), and those whose patterns take quadratic time on text an
# attacker controls, replaced by anchored patterns below: npm (`//.+` retried at every `//`: 3 s
# on a 1 MB prompt), jwt (`eyJ` repeated: 15 s on 300 KB) and openai (`sk-` repeated: 10 s on
# 90 KB). tests/unit/end_of_call/test_redaction.py holds every pattern to linear time on such input.
_SKIPPED_PLUGINS = frozenset(
    {"base", "high_entropy_strings", "keyword", "ip_public", "npm", "jwt", "openai"}
)
_OWN_PATTERNS = [
    re.compile(r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{20,}"),
    re.compile(r"\b[rsp]k_(?:live|test)_[0-9A-Za-z]{10,}"),
    # ElevenLabs (`sk_` and 48 hex), Cartesia (`sk_car_`) and others of that form.
    re.compile(r"\bsk_(?:car_)?[0-9A-Za-z]{32,}"),
    re.compile(r"\b(?:whsec|xai|gsk|hf|npm|pypi|glpat|ghp|github_pat)_[A-Za-z0-9_\-]{16,}"),
    re.compile(r"\bAIza[0-9A-Za-z\-_]{30,}"),
    re.compile(r"//[^\s/]{1,253}/[^\s]{0,200}:_authToken=\s*(\S+)"),
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{4,}\.?[A-Za-z0-9_\-]*"),
    re.compile(
        r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY"
        r"(?: BLOCK)?-----|$)"
    ),
]
# `Bearer abc`, `Bearer: abc`, `Basic abc`, `Token abc`, `Authorization: abc$S`: the credential is
# everything up to whitespace or a quote.
_AUTH_SCHEME = re.compile(
    r"\b(Bearer|Basic|Token|Digest|ApiKey|Api-Key)(\s*:\s*|\s+)([^\s\"'<>,;]+)", re.IGNORECASE
)
_CONNECTION_SECRET = re.compile(
    r"\b(Password|Pwd|AccountKey|SharedAccessKey|SharedAccessSignature|Secret)(\s*=\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^;\s\"']+)",
    re.IGNORECASE,
)
_STANDALONE_TOKEN = re.compile(r"^[A-Za-z0-9+/=_\-.~]{32,}$")
# A random-looking token inside text (a vendor key pasted into a prompt): '/' and '.' end a token
# so that paths and host names are not read as one.
_TOKEN_IN_TEXT = re.compile(r"[A-Za-z0-9_\-+=~]{24,}")
# `password: x`, `SMTP_PASS=x`, `"api_key": "x"`, `secret_value: x` in text (YAML, env files,
# JSON held as text, prose): the value of a secret-sounding name. Bounded repetitions keep the
# scan linear on text an attacker shapes.
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_\-])([A-Za-z][A-Za-z0-9_\-]{0,63})[\"']?[ \t]{0,8}[:=][ \t]{0,8}[\"']?"
    r"([^\s\"',;&}\[\]]+)"
)
# Credentials on a command line: `curl -u user:pass`, `--user user:pass`, `mysql -pPASS`.
_COMMAND_LINE = re.compile(
    r"(?:(?<=\s)|^)(?:-u|--user)[ =]{1,8}['\"]?[^:\s'\"]{1,64}:([^\s'\"]+)"
    r"|(?:(?<=\s)|^)-p([^\s'\"]{4,})"
)
_HEX = re.compile(r"^[0-9a-fA-F]+$")
# Scanning is linear in the text; a 1 MB prompt takes a fraction of a second (README).
MAX_SCANNED_CHARS = 2_000_000


@cache
def detector_patterns() -> tuple[re.Pattern[str], ...]:
    """Every regex of detect-secrets' regex-based plugins, then our own."""
    import detect_secrets.plugins as plugins
    from detect_secrets.plugins.base import RegexBasedDetector

    patterns: list[re.Pattern[str]] = []
    for module_info in pkgutil.iter_modules(plugins.__path__):
        if module_info.name in _SKIPPED_PLUGINS:
            continue
        module = importlib.import_module(f"detect_secrets.plugins.{module_info.name}")
        for _, detector in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(detector, RegexBasedDetector)
                and detector.__module__ == module.__name__
                and not inspect.isabstract(detector)
            ):
                patterns.extend(detector().denylist)
    # Ours first: the private-key block pattern takes the whole block, the plugin only its header.
    return tuple(_OWN_PATTERNS + patterns)


def redact_known_formats(text: str) -> str:
    if len(text) > MAX_SCANNED_CHARS:
        return REDACTED  # larger than any configuration: not worth the risk of a missed secret
    for pattern in detector_patterns():
        text = pattern.sub(_replace_secret, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _CONNECTION_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def _replace_secret(match: re.Match[str]) -> str:
    """Replace the secret: the first group when the pattern has one, else the match without the
    delimiters some plugins include around it."""
    whole = match.group(0)
    if match.re.groups and match.group(1):
        start, end = match.start(1) - match.start(0), match.end(1) - match.start(0)
    else:
        start, end = 0, len(whole)
        while start < end and whole[start] in " \t\r\n=:\"'":
            start += 1
        while end > start and whole[end - 1] in " \t\r\n\"'":
            end -= 1
    if whole[start:end] == REDACTED or not whole[start:end]:
        return whole
    return whole[:start] + REDACTED + whole[end:]


def entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def looks_random(text: str) -> bool:
    """A standalone token: 24+ characters of one token alphabet, mixing letters and digits, with
    the entropy of random bytes (not a word, a UUID or a date)."""
    if len(text) < 24 or REDACTED in text:
        return False
    if not (any(c.isdigit() for c in text) and any(c.isalpha() for c in text)):
        return False
    if _HEX.match(text):
        return len(text) >= 32 and entropy(text) >= 3.0
    return entropy(text) >= 4.0


def is_standalone_secret(text: str) -> bool:
    return bool(_STANDALONE_TOKEN.match(text)) and looks_random(text)


def redact_in_text(text: str, keys: KeyRules) -> str:
    """Secrets that only their context in the text gives away: values of secret-sounding names,
    command-line credentials, and random-looking tokens (vendor keys in prose)."""
    if len(text) > MAX_SCANNED_CHARS:
        return REDACTED
    text = _ASSIGNMENT.sub(lambda m: _assignment(m, keys), text)
    text = _COMMAND_LINE.sub(_command_line, text)
    return _TOKEN_IN_TEXT.sub(lambda m: REDACTED if looks_random(m.group(0)) else m.group(0), text)


def _assignment(match: re.Match[str], keys: KeyRules) -> str:
    name, secret = match.group(1), match.group(2)
    if secret == REDACTED or not keys.is_sensitive(name):
        return match.group(0)
    if secret.isdigit() and not keys.numbers_are_secret(name):
        return match.group(0)  # `max_tokens: 300`, `tokens=4`: a count, as under the key rules
    start, end = match.start(2) - match.start(0), match.end(2) - match.start(0)
    return match.group(0)[:start] + REDACTED + match.group(0)[end:]


def _command_line(match: re.Match[str]) -> str:
    group = 1 if match.group(1) is not None else 2
    if match.group(group) == REDACTED:
        return match.group(0)
    start, end = match.start(group) - match.start(0), match.end(group) - match.start(0)
    return match.group(0)[:start] + REDACTED + match.group(0)[end:]
