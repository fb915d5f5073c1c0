"""Key rules: a value is secret because of the name it is stored under."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

_WORD_BOUNDARY = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# Words whose values are secret even when they are numbers (a PIN, a numeric password); under
# other words (`max_tokens: 300`, `keys: 4`) a number or a boolean is a count or a flag.
PASSWORD_WORDS = frozenset({"password", "passwd", "pass", "pwd", "pin", "passcode", "passphrase"})
# Names that look secret by suffix but are not (`monkey`, `turnkey`, `hotkey` end in "key").
HARMLESS_WORDS = frozenset(
    {"monkey", "turkey", "hotkey", "turnkey", "keyboard", "donkey", "whiskey"}
)

# A name counting or limiting tokens or keys (`max_tokens`, `token_limit`, `tokens_used`) holds
# a setting, not a credential.
COUNTING_WORDS = frozenset({"max", "min", "num", "count", "limit", "total", "used", "usage"})


def words_of(key: str) -> list[str]:
    """snake_case, kebab-case, camelCase and ACRONYMCase split into lower-case words."""
    return [word.lower() for word in _WORD_BOUNDARY.split(key) if word]


def singular(word: str) -> str:
    # tokens, keys, secrets, passwords, credentials -> their singular; "pass" stays.
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


class KeyRules:
    def __init__(self, sensitive_words: Iterable[str]) -> None:
        self.words = frozenset(singular(word.lower()) for word in sensitive_words if word)
        # Text repeats its names (`token=1;token=1;...`): each is judged once.
        self._judged = functools.lru_cache(maxsize=4096)(self._judge)

    def is_sensitive(self, key: str) -> bool:
        return self._judged(key)

    def _judge(self, key: str) -> bool:
        words = [singular(word) for word in words_of(key)]
        if not words or COUNTING_WORDS.intersection(words):
            return False
        if any(word in self.words for word in words):
            return True
        # "apikey", "accesstoken", "clientsecret": one word ending in a sensitive one.
        joined = "".join(words)
        if joined in HARMLESS_WORDS:
            return False
        return any(joined.endswith(word) and len(word) >= 3 for word in self.words)

    def numbers_are_secret(self, key: str) -> bool:
        return any(singular(word) in PASSWORD_WORDS for word in words_of(key))
