"""URL rules: credentials in the user-info, the query, the fragment and the path of any URL found
in text, parsed by pattern rather than by urllib (a URL that fails to parse still has them)."""

from __future__ import annotations

import re
from collections.abc import Callable

from service.end_of_call.redaction.values import REDACTED, looks_random

URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.\-]{1,15}://[^\s"'<>`]+""")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#@\s]*)@")
_PARAMETER = re.compile(r"([?#&;])([^=&;#?]*)=([^&;#]*)")
# Query and fragment parameters that carry credentials whatever the key rules say.
SECRET_PARAMETERS = frozenset(
    {
        "code",
        "sig",
        "signature",
        "auth",
        "apikey",
        "key",
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "client_secret",
        "password",
        "pass",
        "pwd",
        "secret",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
    }
)
# Services whose webhook URLs are themselves the secret: (pattern, group to redact).
_PATH_SECRETS = [
    re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/)([^?#\s]+)", re.I),
    re.compile(r"(api\.telegram\.org/(?:file/)?bot)([^/?#\s]+)", re.I),
    re.compile(r"((?:discord(?:app)?\.com)/api/webhooks/\d+/)([^/?#\s]+)", re.I),
    re.compile(r"(outlook\.office(?:365)?\.com/webhook/)([^?#\s]+)", re.I),
    re.compile(r"(chat\.googleapis\.com/v1/spaces/[^/\s]+/messages\?)([^#\s]+)", re.I),
]
_PATH_SEGMENT = re.compile(r"(?<=/)[A-Za-z0-9_\-+=.~]{24,}(?=[/?#]|$)")


def redact_urls(text: str, is_sensitive: Callable[[str], bool]) -> str:
    if "://" not in text:
        return text
    return URL.sub(lambda match: redact_url(match.group(0), is_sensitive), text)


def redact_url(url: str, is_sensitive: Callable[[str], bool]) -> str:
    url = _USERINFO.sub(_userinfo, url)
    for pattern in _PATH_SECRETS:
        url = pattern.sub(lambda m: m.group(1) + REDACTED, url)
    url = _PARAMETER.sub(lambda m: _parameter(m, is_sensitive), url)
    head, _, _ = url.partition("?")
    path_start = head.find("/", head.find("://") + 3) if "://" in head else -1
    if path_start >= 0:
        path = head[path_start:].split("#")[0]
        cleaned = _PATH_SEGMENT.sub(
            lambda m: REDACTED if looks_random(m.group(0)) else m.group(0), path
        )
        url = url[:path_start] + cleaned + url[path_start + len(path) :]
    return url


def _userinfo(match: re.Match[str]) -> str:
    scheme, info = match.group(1), match.group(2)
    if ":" in info:
        return f"{scheme}{info.split(':', 1)[0]}:{REDACTED}@"
    return f"{scheme}{REDACTED}@"  # a lone user-info is often a token (https://TOKEN@host)


def _parameter(match: re.Match[str], is_sensitive: Callable[[str], bool]) -> str:
    separator, name, value = match.groups()
    lowered = name.strip().lower()
    if value and value != REDACTED and (lowered in SECRET_PARAMETERS or is_sensitive(name)):
        return f"{separator}{name}={REDACTED}"
    if value and looks_random(value):
        return f"{separator}{name}={REDACTED}"
    return match.group(0)
