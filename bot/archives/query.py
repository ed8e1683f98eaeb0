"""A user's message as search terms: the words that can tell passages apart.

    query_terms("What did my notes say about the mitochondria?")  ->  ["notes", "mitochondria"]

Both backends rank passages by the terms they contain (any of them: a message is not a boolean
query, and requiring every word of it finds nothing), so the terms are its words less the
common English function words (SQLite's FTS5 has no stop list of its own; PostgreSQL's `english`
configuration drops the same kind), lowercased, each once, and at most `MAX_TERMS` of them: for a
long message, its longest words, which are the rarer ones. Stemming ("cells" -> "cell") is the
backends' (FTS5 `porter`, PostgreSQL `english`), so that passages and queries are stemmed alike.
"""

from __future__ import annotations

import re

MAX_TERMS = 16

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")

# Common English function words, and a few of the requests that wrap a question.
_STOPWORD_TEXT = """
    a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each explain few for from further had hadn't has hasn't have
    haven't having he he'd he'll he's her here here's hers herself him himself his how how's i
    i'd i'll i'm i've if in into is isn't it it's its itself just let's like me more most
    mustn't my myself no nor not of off on once only or other ought our ours ourselves out over
    own please same shan't she she'd she'll she's should shouldn't so some such tell than that
    that's the their theirs them themselves then there there's these they they'd they'll they're
    they've this those through to too under until up very was wasn't we we'd we'll we're we've
    were weren't what what's when when's where where's which while who who's whom why why's will
    with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def query_terms(text: str, *, max_terms: int = MAX_TERMS) -> list[str]:
    seen: dict[str, int] = {}
    for index, match in enumerate(_WORD.finditer(text.lower())):
        word = match.group().replace("’", "'")
        if word in STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        if "'" in word:  # "cell's" -> "cell"; the stemmers would split it the same way
            word = word.split("'", 1)[0]
            if word in STOPWORDS or not word:
                continue
        seen.setdefault(word, index)
    terms = list(seen)
    if len(terms) > max_terms:
        keep = set(sorted(terms, key=lambda term: (-len(term), seen[term]))[:max_terms])
        terms = [term for term in terms if term in keep]
    return terms
