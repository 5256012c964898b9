"""Everyday-typing conversations for the demo model: the way people actually write to a chat box.

`demo_dialogues.generate_dialogues` speaks in a few clean templates ("My name is Oscar.", "What is my job?");
a model trained only on them answers `hi` with a stored fact and drops "Hi! My name is Oscar." (issue 19). A model
trained on a few dozen whole templates per fact learns those surface forms, not the meaning (stage 9/10: 95% on
the generator's own phrasings, 34-75% on phrasings written apart from it). So these conversations keep the same
facts, pools, held-out split and turn kinds, but compose every user message from small grammars (phrase data in
`everyday_phrases.py`, `everyday_questions.py`, `everyday_corrections.py`, `everyday_smalltalk.py`; `[a|b]`
alternations expanded here), so each fact comes in thousands of surface forms:

- statements by phenomenon: many words per fact (live / am from / grew up in / am based in / call home...), whole
  clauses, topicalised ones ("{v}, that's where I live"), verbless fragments ("based in {v}", "age: {v}"),
  a value answering an unasked question ("in case you're wondering where I live, it's {v}"), hedges and
  adverbials ("honestly", "these days", "since I was a kid"), openers ("btw"), closers ("lol", ":)");
- a greeting and a fact in one message; two facts in one message as two clauses, a clause + a subjectless verb
  phrase ("I live in {v} and work as {a} {v}"), a clause + an apposition or fragment ("I'm {v}, {a} {v}"), or two
  fragments (the acknowledgement names both);
- corrections whole ("I've since moved to {v}", "not there anymore, ..."), as an opener + any statement + a closer
  ("scratch that, " + "I'm based in {v}" + " now"), or right after the fact as an opener + the bare value;
- questions direct, lead + embedded ("do you remember" + "where I grew up"), prefixed, or fragments ("and my
  job?"); never-told facts -> `UNKNOWN_ANSWER`;
- small talk as whole pairs, as families (time-of-day greetings, slang, "haha", "cool cool", emoticons, moods,
  what the user is doing, questions to the bot), or `demo_dialogues`' small talk; always answered with small talk;
- typing noise on the user's side only: contractions flipped both ways (I'm / I am, name's / name is, don't /
  do not), British / American spelling, any casing, missing or extra punctuation, dropped apostrophes, chat
  shorthand ("u", "ur", "pls", "rn") and one or two small typos in non-value words.

The model's answers stay in the fixed forms below and repeat a value as the user typed it. Every interaction is
kept within the trainer's `--width 80` even with 13-letter stand-in values (`_fits`: a long draw is redrawn).

It is a separate module so that `generate_dialogues` (and the shipped tokenizer trained on its output) stay byte
for byte what they were. `train_demo.py --everyday P` draws a share P of each batch from here.
"""

from __future__ import annotations

import random
import re

import demo_dialogues as dd
import everyday_corrections as ec
import everyday_phrases as ep
import everyday_questions as eq
import everyday_smalltalk as es

# Acknowledgements of one told fact (the value repeated as typed).
ACKS: dict[str, tuple[str, ...]] = {
    "name": ("Nice to meet you, {v}!", "Hi {v}, nice to meet you!", "Got it, {v}.", "Hello, {v}!"),
    "friend": ("{v} sounds like a good friend!", "Nice, say hi to {v} from me."),
    "city": ("{v} sounds like a great place!", "Oh, {v}! Nice.", "Got it, you live in {v}."),
    "pet": ("{v} is a lovely name for {ka} {kind}!", "Aw, say hi to {v}!"),
    "colour": ("Nice, {v} is a lovely colour.", "Noted: you like {v}."),
    "age": ("{v} is a great age!", "Got it, you are {v}."),
    "job": ("Being {a} {v} sounds interesting!", "Oh, you're {a} {v}! Cool."),
    "food": ("Yum, {v}!", "Mmm, {v} is a fine choice."),
}
NOTED: dict[str, str] = {
    "name": "you're {v}",
    "friend": "your best friend is {v}",
    "city": "you live in {v}",
    "pet": "you have {ka} {kind} called {v}",
    "colour": "you like {v}",
    "age": "you're {v}",
    "job": "you're {a} {v}",
    "food": "you love {v}",
}
TWO_ACKS = ("Got it: {n1}, and {n2}.", "Nice! So {n1}, and {n2}.", "Noted, {n1} and {n2}.")
NAME_FIRST_ACK = "Nice to meet you, {v}! So {n2}."
ANSWERS: dict[str, tuple[str, ...]] = {key: answers for key, (_, answers) in dd.ASK_TEMPLATES.items()}
SMALLTALK = es.SMALLTALK  # (the stage-9 pairs; they live with the other small talk now)

#: Chat shorthand people type: whole words, replaced in queries only (never in a value).
_SHORTHAND = (
    (r"\byou\b", "u"),
    (r"\byour\b", "ur"),
    (r"\byou're\b", "ur"),
    (r"\bare\b", "r"),
    (r"\bplease\b", "pls"),
    (r"\bplease\b", "plz"),
    (r"\bthanks\b", "thx"),
    (r"\bbecause\b", "cuz"),
    (r"\bfavourite\b", "fav"),
    (r"\band\b", "n"),
    (r"\bI\b", "i"),
    (r"\breally\b", "rly"),
    (r"\bokay\b", "ok"),
    (r"\bto be honest\b", "tbh"),
    (r"\bby the way\b", "btw"),
    (r"\bpeople\b", "ppl"),
    (r"\bprobably\b", "prob"),
    (r"\bthough\b", "tho"),
    (r"\babout\b", "abt"),
    (r"\bright now\b", "rn"),
    (r"\bwith\b", "w/"),
    (r"\bsomething\b", "smth"),
    (r"\bwhat\b", "wat"),
    (r"\bdon't know\b", "dunno"),
)
#: Contractions (long form, short form), flipped both ways in queries: "I am" <-> "I'm". "I have" contracts only
#: before a participle or "got" ("I've got", not "I've a dog"); "'s" expands only after these words (never a
#: possessive: "my dog's name").
_CONTRACTIONS = tuple(
    (re.compile(rf"\b{long}", re.IGNORECASE), re.compile(rf"\b{short}\b", re.IGNORECASE), lt, st)
    for long, short, lt, st in (
        (r"I am\b", "I'm", "I am", "I'm"),
        (
            r"I have(?= (?:been|got|just|always|lived|had|moved|never|since|loved|made)\b)",
            "I've",
            "I have",
            "I've",
        ),
        (r"we have(?= (?:been|got|just|had|moved)\b)", "we've", "we have", "we've"),
        (r"I would\b", "I'd", "I would", "I'd"),
        (r"I will\b", "I'll", "I will", "I'll"),
        (r"it would\b", "it'd", "it would", "it'd"),
        *(
            (rf"{w} is\b", f"{w}'s", f"{w} is", f"{w}'s")
            for w in ("it", "that", "what", "where", "who", "how", "there", "name", "colour", "color", "job")
        ),
        (r"you are\b", "you're", "you are", "you're"),
        (r"we are\b", "we're", "we are", "we're"),
        (r"they are\b", "they're", "they are", "they're"),
        (r"do not\b", "don't", "do not", "don't"),
        (r"does not\b", "doesn't", "does not", "doesn't"),
        (r"did not\b", "didn't", "did not", "didn't"),
        (r"is not\b", "isn't", "is not", "isn't"),
        (r"are not\b", "aren't", "are not", "aren't"),
        (r"cannot\b", "can't", "cannot", "can't"),
        (r"will not\b", "won't", "will not", "won't"),
        (r"want to\b", "wanna", "want to", "wanna"),
        (r"got to\b", "gotta", "got to", "gotta"),
        (r"kind of\b", "kinda", "kind of", "kinda"),
    )
)
#: British / American spellings, swapped both ways.
_SPELLINGS = (("favourite", "favorite"), ("colours", "colors"), ("colour", "color"))
#: The most tokens an interaction may be estimated at (`_cost`). Fitted on generated interactions with 13-letter
#: stand-ins (about 0.3 tokens a character of ordinary text, 8 a stand-in word, 5 an age); 70 leaves the error
#: room below the trainer's --width 80 (measured: about 0.2% of interactions over 80 with all-13-letter values).
WIDTH_TOKENS = 70
_ALT = re.compile(r"\[([^\[\]]*)\]")


def expand(template: str, rng: random.Random) -> str:
    """One sentence of a template grammar: each `[a|b|...]` group (innermost first) replaced by one alternative."""
    while m := _ALT.search(template):
        template = template[: m.start()] + rng.choice(m.group(1).split("|")) + template[m.end() :]
    template = re.sub(r" {2,}", " ", template)
    return re.sub(r" '(m|s|ve|re|d|ll)\b", r"'\1", template).replace(" ,", ",")


def _fill(template: str, v: str, kind: str | None, pronoun: str = "his") -> str:
    ka = dd.article(kind) if kind else ""
    a = dd.article(v) if v else ""
    obj = "him" if pronoun == "his" else "her"
    return template.format(v=v, a=a, kind=kind or "", ka=ka, ka_cap=ka.capitalize(), pr=pronoun, pr_obj=obj)


def _pick(
    templates: tuple[str, ...], rng: random.Random, v: str, kind: str | None, pronoun: str = "his"
) -> str:
    """A template drawn, expanded and filled."""
    return _fill(expand(rng.choice(templates), rng), v, kind, pronoun)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _sentence(core: str, rng: random.Random, end: str = ".") -> str:
    """A clause as a message: capitalised most of the time (and after a full stop), with its final punctuation."""
    if rng.random() < 0.8:
        core = _cap(core)
        if rng.random() < 0.7:
            core = re.sub(r"([.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), core)
    return core + end


def _cost(query: str, answer: str, values: tuple[str, ...]) -> float:
    """The interaction's estimated token count with every value replaced by a 13-letter stand-in."""
    text = f"{query} {answer}"
    cost = 7.0
    for v in sorted(set(values), key=len, reverse=True):
        text, hits = re.subn(rf"(?<!\w){re.escape(v)}(?!\w)", "", text, flags=re.IGNORECASE)
        cost += hits * (5 if v.isdigit() else 8)
    return cost + 0.3 * len(text)


def _fits(query: str, answer: str, values: tuple[str, ...]) -> bool:
    """Whether the interaction stays within the trainer's --width even with long stand-in values."""
    return _cost(query, answer, values) <= WIDTH_TOKENS


# --- typing noise (queries only; values are never misspelled) -----------------------------------


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 2)
    r = rng.random()
    if r < 0.35:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if r < 0.65:  # drop one letter
        return word[:i] + word[i + 1 :]
    if r < 0.85:  # double one letter
        return word[:i] + word[i] + word[i:]
    return word[:i] + rng.choice("aeioustnrl") + word[i + 1 :]  # a wrong letter


def _same_case(new: str, old: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def _flip_contractions(query: str, rng: random.Random) -> str:
    """Contracts or expands (each kind found, at random) the contractions of a query: "I'm" <-> "I am"."""
    for long, short, lt, st in _CONTRACTIONS:
        if rng.random() < 0.6:
            query = long.sub(lambda m, st=st: _same_case(st, m.group(0)), query)
        elif rng.random() < 0.6:
            query = short.sub(lambda m, lt=lt: _same_case(lt, m.group(0)), query)
    for uk, us in _SPELLINGS:
        if rng.random() < 0.5:
            a, b = (uk, us) if rng.random() < 0.5 else (us, uk)
            query = re.sub(rf"\b{a}\b", b, query)
    return query


def noisy(query: str, values: tuple[str, ...], rng: random.Random) -> str:
    """The query as people type it: contractions flipped, any casing, missing or extra punctuation, dropped
    apostrophes, chat shorthand ("u", "ur", "pls") and one or two small typos, never in a value."""
    protected = {v.lower() for v in values}
    if rng.random() < 0.35:
        query = _flip_contractions(query, rng)
    # typos and shorthand not in a one-word message: a changed word there is another message ("hiya" -> "heya")
    several = " " in query.strip()
    if rng.random() < 0.13 and several:  # one typo, a second (in another word) in a fifth of those
        words = [m for m in re.finditer(r"[A-Za-z]{4,}", query) if m.group(0).lower() not in protected]
        picked = rng.sample(words, min(len(words), 2 if rng.random() < 0.2 else 1))
        for m in sorted(picked, key=lambda m: -m.start()):
            query = query[: m.start()] + _typo(m.group(0), rng) + query[m.end() :]
    if rng.random() < 0.15 and several:
        pattern, short = rng.choice(_SHORTHAND)
        if not any(short == v for v in protected):
            query = re.sub(pattern, short, query)
    r = rng.random()
    if r < 0.4:
        query = query.lower()
    elif r < 0.45:
        query = _cap(query.lower())
    elif r < 0.47 and len(query) < 32 and len(values) <= 2:  # (capitals cost about twice the pieces)
        query = query.upper()
    if rng.random() < 0.18:  # (not after a value: "Rome's home" must not become "Romes home")
        query = re.sub(
            r"(\w*)'", lambda m: m.group(0) if m.group(1).lower() in protected else m.group(1), query
        )
    r = rng.random()
    if r < 0.32:
        query = query.rstrip(".!?")
    elif r < 0.42:
        query = query.rstrip(".!?") + rng.choice(
            ("!!", "...", "!", " ?", "??", "!!!", " :)", "..", " xD", " :D")
        )
    r = rng.random()
    if r < 0.06:
        query = query.replace(",", "")
    elif r < 0.09:
        query = query.replace(", ", ",")
    if rng.random() < 0.03:
        query = " " + query if rng.random() < 0.5 else query + " "
    return query


# --- turns ---------------------------------------------------------------------------------

_PRONOUNS = ("his", "her")
#: Fragments that are only the value ("{v}", "{a} {v}"): an apposition after a name ("I'm Ann, 34"), never alone.
_BARE = ("{v}", "{a} {v}")


def _value_tuple(key: str, facts: dict[str, str]) -> tuple[str, ...]:
    return (facts[key], facts["pet_kind"]) if key == "pet" else (facts[key],)


def _core(key: str, facts: dict[str, str], rng: random.Random, pronoun: str) -> str:
    """A whole clause stating the fact (subject and verb)."""
    return _pick(ep.TELLS[key], rng, facts[key], facts["pet_kind"], pronoun)


def _fragment(key: str, facts: dict[str, str], rng: random.Random, pronoun: str, bare: bool = False) -> str:
    """A verbless fragment stating the fact ("based in {v}"); the bare value only when `bare`."""
    forms = tuple(f for f in ep.FRAGMENTS[key] if bare or f not in _BARE)
    return _pick(forms, rng, facts[key], facts["pet_kind"], pronoun)


def _statement(key: str, facts: dict[str, str], rng: random.Random, pronoun: str) -> str:
    """The fact in one of its shapes: a clause (now and then hedged), a fragment, or the answer to an unasked
    question ("in case you're wondering" + "where I live" + ", it's {v}")."""
    r = rng.random()
    if r < 0.7:
        return _core(key, facts, rng, pronoun)
    if r < 0.8 and key != "name":
        return rng.choice(ep.HEDGES) + _core(key, facts, rng, pronoun)
    if r < 0.92:
        return _fragment(key, facts, rng, pronoun)
    lead = rng.choice(ep.ANSWERED_LEADS) + " " + _pick(eq.EMBEDDED[key], rng, "", facts["pet_kind"])
    return lead + rng.choice((", ", ": ", " - ")) + _pick(ep.ANSWERED_VALUES[key], rng, facts[key], None)


def _dress(core: str, rng: random.Random, greet: bool) -> str:
    """A fact clause with an opener or a closer now and then, and a greeting in front when `greet`."""
    if rng.random() < 0.2:
        core = rng.choice(ep.OPENERS) + core
    text = _sentence(core, rng)
    if rng.random() < 0.1:
        text = text.rstrip(".") + rng.choice(ep.CLOSERS)
    if greet:
        text = rng.choice(ep.GREETING_PREFIXES) + " " + text
    return text


def _fitting(make, values: tuple[str, ...], fallback):
    """The first of a few draws of `make()` (a (query, answer) pair) that `_fits`, else of `fallback()`
    (a plainer form), else the cheapest draw seen."""
    seen = []
    for draw in (make,) * 8 + (fallback,) * 8:
        query, answer = draw()
        if _fits(query, answer, values):
            return query, answer
        seen.append((_cost(query, answer, values), query, answer))
    return min(seen)[1:]


def _tell(key: str, facts: dict[str, str], rng: random.Random, greet: bool) -> dd.Turn:
    v, kind, values = facts[key], facts["pet_kind"], _value_tuple(key, facts)

    def make(shape: bool = True, greet: bool = greet) -> tuple[str, str]:
        pr = rng.choice(_PRONOUNS)
        core = _statement(key, facts, rng, pr) if shape else _core(key, facts, rng, pr)
        query = noisy(_dress(core, rng, greet) if shape else _sentence(core, rng), values, rng)
        if key == "name" and greet:
            answer = rng.choice(("Hi {v}, nice to meet you!", "Hello, {v}! Nice to meet you.")).format(v=v)
        else:
            answer = _cap(_fill(rng.choice(ACKS[key]), v, kind))
            if greet:
                answer = "Hello! " + answer
        return query, answer

    query, answer = _fitting(make, values, lambda: make(False, False))
    return dd.Turn(query, answer, dd.TELL, key, None, v)


def _second(k1: str, k2: str, c1: str, facts: dict[str, str], rng: random.Random) -> str:
    """The second fact of a message after the first one's clause `c1`: a whole clause, a verb phrase sharing
    c1's "I", or a fragment (an apposition: the bare value only after a name, "I'm Ann, 34"). After a verbless
    "{v} here" always a whole clause; a pet told second otherwise never is one, nor "and I" + a verb phrase:
    "I'm {v} and I have a {kind} named {v}" is, values masked, an evaluation sentence (as in `demo_drills`)."""
    pr = rng.choice(_PRONOUNS)
    r = 1.0 if c1.endswith(" here") else rng.random() * (0.5 if k2 == "pet" else 1.0)
    if r < 0.22 and re.match(r"i\b|i'm\b|i've\b", c1, re.IGNORECASE):
        joiners = tuple(j for j in ep.VP_JOINERS if k2 != "pet" or j != " and I ")
        return rng.choice(joiners) + _pick(ep.VPS[k2], rng, facts[k2], facts["pet_kind"], pr)
    if r < 0.5:
        return rng.choice(ep.FRAGMENT_JOINERS) + _fragment(k2, facts, rng, pr, bare=k1 == "name")
    joiner = rng.choice(ep.JOINERS)
    c2 = _core(k2, facts, rng, pr)
    return joiner + (_cap(c2) if joiner.startswith((".", "!")) and rng.random() < 0.7 else c2)


def _tell_two(k1: str, k2: str, facts: dict[str, str], rng: random.Random) -> dd.Turn:
    kind = facts["pet_kind"]
    values = _value_tuple(k1, facts) + _value_tuple(k2, facts)
    n1, n2 = _fill(NOTED[k1], facts[k1], kind), _fill(NOTED[k2], facts[k2], kind)

    def make(plain: bool = False) -> tuple[str, str]:
        pr = rng.choice(_PRONOUNS)
        if not plain and rng.random() < 0.12:  # two fragments: "name: {v}, age: {v}"
            body = (
                _fragment(k1, facts, rng, pr)
                + rng.choice((", ", " - ", " / ", ". "))
                + _fragment(k2, facts, rng, pr, bare=k1 == "name")
            )
        else:
            c1 = _core(k1, facts, rng, pr)
            if not plain:
                body = c1 + _second(k1, k2, c1, facts, rng)
            elif k2 == "pet":  # (see `_second`)
                body = c1 + ", " + _fragment(k2, facts, rng, pr)
            else:
                body = c1 + " and " + _core(k2, facts, rng, pr)
        query = _dress(body, rng, greet=rng.random() < 0.25) if not plain else _sentence(body, rng)
        if k1 == "name" and rng.random() < 0.5:
            answer = NAME_FIRST_ACK.format(v=facts[k1], n2=n2)
        else:
            answer = rng.choice(TWO_ACKS).format(n1=n1, n2=n2)
        return noisy(query, values, rng), _cap(answer)

    query, answer = _fitting(make, values, lambda: make(True))
    return dd.Turn(query, answer, dd.TELL, f"{k1}+{k2}", None, None)


def _correct(key: str, facts: dict[str, str], rng: random.Random, recent: bool = False) -> dd.Turn:
    """A correction to `facts[key]` (already the new value): whole, an opener + a statement (+ a closer), or,
    when the fact was told just before (`recent`), an opener + the bare value ("no wait, {v}")."""
    value, kind, values = facts[key], facts["pet_kind"], _value_tuple(key, facts)

    def make() -> tuple[str, str]:
        pr = rng.choice(_PRONOUNS)
        r = rng.random()
        if recent and r < 0.25:
            core = rng.choice(ec.CORRECTION_OPENERS) + _pick(
                ec.CORRECTION_FRAGMENTS[key], rng, value, kind, pr
            )
        elif r < 0.5:
            core = _pick(ec.CORRECTIONS[key], rng, value, kind, pr)
        else:
            statement = _core(key, facts, rng, pr) if rng.random() < 0.75 else _fragment(key, facts, rng, pr)
            core = rng.choice(ec.CORRECTION_OPENERS) + statement
            if rng.random() < 0.4:
                core += rng.choice(ec.CORRECTION_CLOSERS)
        answer = _fill(rng.choice(ec.CORRECTION_ACKS[key]), value, kind)
        return noisy(_sentence(core, rng), values, rng), answer

    query, answer = _fitting(make, values, make)
    return dd.Turn(query, answer, dd.UPDATE, key, None, value)


def _question(key: str, kind: str, rng: random.Random) -> str:
    """A question about `key`: direct (maybe after a prefix), a lead + an embedded clause, or a fragment."""
    r = rng.random()
    if r < 0.25:
        q = rng.choice(eq.LEADS) + " " + expand(rng.choice(eq.EMBEDDED[key]), rng)
    elif r < 0.32:
        q = rng.choice(eq.FRAGMENT_LEADS) + " " + expand(rng.choice(eq.NOUNS[key]), rng)
    else:
        q = expand(rng.choice(eq.ASKS[key]), rng)
        if rng.random() < 0.15:
            q = rng.choice(eq.PREFIXES) + q
    q = _fill(q, "", kind)
    return (_cap(q) if rng.random() < 0.7 else q) + rng.choice(eq.ASK_ENDS)


def _ask(key: str, facts: dict[str, str], after: int, rng: random.Random) -> dd.Turn:
    kind = facts["pet_kind"]
    a = _fill(rng.choice(ANSWERS[key]), facts[key], kind)
    return dd.Turn(noisy(_question(key, kind, rng), (kind,), rng), a, dd.ASK, key, after, facts[key])


def _ask_unknown(key: str, kind: str, rng: random.Random) -> dd.Turn:
    q = noisy(_question(key, kind, rng), (kind,), rng)
    return dd.Turn(q, dd.UNKNOWN_ANSWER, dd.ASK_UNKNOWN, key, None, None)


def _smalltalk(rng: random.Random) -> dd.Turn:
    """Small talk: a whole pair (30%), a family's grammar (45%: any query, any of its answers), or
    `demo_dialogues`' small talk (sums, weather, trivia)."""
    r = rng.random()
    if r < 0.3:
        q, a = rng.choice(SMALLTALK)
    elif r < 0.75:
        queries, answers, ends = rng.choice(es.FAMILIES)
        q = expand(rng.choice(queries), rng).strip() + rng.choice(ends)
        q, a = (_cap(q) if rng.random() < 0.6 else q), rng.choice(answers)
    else:
        q, a = dd._smalltalk_pair(rng)
    return dd.Turn(noisy(q, (), rng), a, dd.SMALLTALK)


# --- conversations -------------------------------------------------------------------------


def _render(rng: random.Random, split: str, max_turns: int) -> dd.Dialogue:
    low = min(3, max_turns)
    n = max(rng.randint(low, max_turns), rng.randint(low, max_turns))
    facts = dd._draw_facts(rng, split)
    keys = list(dd.FACT_POOL)
    rng.shuffle(keys)
    told_at: dict[str, int] = {}
    turns: dd.Dialogue = []
    greet_first = rng.random() < 0.35
    for i in range(n):
        told = list(told_at)
        untold = [k for k in dd.ASK_KEYS if k not in told_at and not (k == "pet_kind" and "pet" in told_at)]
        r = rng.random()
        if i == 0 and greet_first:
            turns.append(_smalltalk(rng))
        elif told and r < 0.36 and i > 0:
            # the longest-held fact half the time: long delays (4, 8) are where recall is hard
            key = min(told, key=told_at.get) if rng.random() < 0.5 else rng.choice(told)
            ask_key = "pet_kind" if key == "pet" and rng.random() < 0.25 else key
            turns.append(_ask(ask_key, facts, i - told_at[key], rng))
        elif r < 0.6 and len(told) < 5:
            fresh = [k for k in keys if k not in told_at]
            pairs = [(a, b) for a in fresh for b in fresh if a != b and {a, b} != {"name", "friend"}]
            if pairs and rng.random() < 0.3:  # (never two names in one message: which is whose?)
                k1, k2 = rng.choice(pairs)
                if "name" in (k1, k2) and rng.random() < 0.6:  # people introduce themselves first
                    k1, k2 = "name", k2 if k1 == "name" else k1
                turns.append(_tell_two(k1, k2, facts, rng))
                told_at[k1] = told_at[k2] = i
            elif fresh:
                key = fresh[0]
                turns.append(_tell(key, facts, rng, greet=rng.random() < 0.25))
                told_at[key] = i
            else:
                turns.append(_smalltalk(rng))
        elif r < 0.68 and told:
            key = rng.choice(told)
            others = [v for v in dd.pool_values(dd.FACT_POOL[key], split) if v != facts[key]]
            if key in ("name", "friend"):
                others = [v for v in others if v not in (facts["name"], facts["friend"])]
            facts[key] = rng.choice(others)
            told_at[key] = i
            turns.append(_correct(key, facts, rng, recent=bool(turns) and turns[-1].fact_key == key))
        elif r < 0.78 and untold:
            turns.append(
                _ask_unknown(rng.choice(untold), rng.choice(dd.pool_values("pet_kinds", split)), rng)
            )
        else:
            turns.append(_smalltalk(rng))
    return turns


def generate_everyday(n: int, seed: int, split: str = "train", max_turns: int = 12) -> list[dd.Dialogue]:
    """`n` everyday-typed conversations of 3..max_turns turns with values from `split` only (deterministic)."""
    dd._check_split(split)
    dd._check_positive("n", n, 0)
    dd._check_positive("max_turns", max_turns, 2)
    rng = random.Random(f"rxt-demo-everyday:{split}:{seed}")
    return [_render(rng, split, max_turns) for _ in range(n)]


def template_texts() -> list[str]:
    """Every phrase of this generator and its data modules (placeholders and alternations unexpanded): tests
    check none holds a pool value."""
    out = [t for ts in ACKS.values() for t in ts] + list(NOTED.values()) + list(TWO_ACKS) + [NAME_FIRST_ACK]
    return out + ep.texts() + eq.texts() + ec.texts() + es.texts()
