"""Dockerfile word expansion: quotes, escapes and `$VAR` forms, as Docker's builder applies them.

The parser (the `dockerfile` package, Docker's own Go parser) splits instructions into words but
leaves each word raw; what a word means after `ENV`, `COPY`, `WORKDIR` and friends is defined by
the builder's shell-word rules, reproduced here: single quotes are literal, double quotes allow
`$` expansion and `\\` escapes of `"`, `$`, `\\` and the escape character, and unquoted text
allows both. Supported forms: `$NAME`, `${NAME}`, `${NAME:-word}` and `${NAME:+word}`.
"""

from __future__ import annotations

from collections.abc import Mapping

# instructions whose words get variables expanded (RUN, CMD and ENTRYPOINT leave it to the shell)
EXPANDS = frozenset({"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER",
                     "VOLUME", "WORKDIR", "ARG", "ONBUILD", "SHELL"})


class WordError(ValueError):
    """A malformed word: an unterminated quote or `${`, or an unsupported modifier."""


def _name(word: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(word) and (word[i].isalnum() or word[i] == "_"):
        i += 1
    return word[start:i], i


def _dollar(word: str, i: int, env: Mapping[str, str], escape: str) -> tuple[str, int]:
    """Expand the `$` form starting at word[i] (the `$`); returns the text and the next index."""
    i += 1
    if i >= len(word):
        return "$", i
    if word[i] != "{":
        name, j = _name(word, i)
        if not name:
            return "$", i
        return env.get(name, ""), j
    name, j = _name(word, i + 1)
    if not name:
        raise WordError(f"bad substitution in {word!r}: missing variable name after '${{'")
    if j >= len(word):
        raise WordError(f"bad substitution in {word!r}: missing '}}'")
    if word[j] == "}":
        return env.get(name, ""), j + 1
    if word[j] != ":" or j + 1 >= len(word) or word[j + 1] not in "-+":
        raise WordError(f"unsupported modifier in {word!r}: only ${{VAR:-word}} and "
                        "${VAR:+word} are supported")
    op = word[j + 1]
    depth, k = 1, j + 2
    while k < len(word) and depth:
        if word[k] == escape:
            k += 2
            continue
        depth += {"{": 1, "}": -1}.get(word[k], 0)
        k += 1
    if depth:
        raise WordError(f"bad substitution in {word!r}: missing '}}'")
    inner = expand(word[j + 2:k - 1], env, escape)
    value = env.get(name, "")
    if op == "-":
        return (value if value else inner), k
    return (inner if value else ""), k


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """One word with its quotes removed and its variables replaced."""
    out: list[str] = []
    i, quote = 0, ""
    while i < len(word):
        c = word[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                out.append(c)
            i += 1
        elif c == escape and i + 1 < len(word) and (
                not quote or word[i + 1] in ('"', "$", escape)):
            out.append(word[i + 1])
            i += 2
        elif c == "$":
            text, i = _dollar(word, i, env, escape)
            out.append(text)
        elif c in "'\"" and not quote:
            quote = c
            i += 1
        elif c == '"' and quote == '"':
            quote = ""
            i += 1
        else:
            out.append(c)
            i += 1
    if quote:
        raise WordError(f"unterminated {quote} quote in {word!r}")
    return "".join(out)


def pairs(values: tuple[str, ...], env: Mapping[str, str], escape: str = "\\"
          ) -> list[tuple[str, str]]:
    """ENV and LABEL operands (the parser gives key, value, key, value...), expanded."""
    if len(values) % 2:
        raise WordError("expected key=value pairs")
    return [(expand(values[k], env, escape), expand(values[k + 1], env, escape))
            for k in range(0, len(values), 2)]
