"""Everyday-typing conversations for the demo model: the way people actually write to a chat box.

`demo_dialogues.generate_dialogues` speaks in a few clean templates ("My name is Oscar.", "What is my job?");
a model trained only on them answers `hi` with a stored fact and drops "Hi! My name is Oscar." (issue 19).
These conversations keep the same facts, pools, held-out split and turn kinds, and add:

- greetings and small talk in many forms ("hey!", "good morning", "how are you", "thanks"), answered with small
  talk, never with a stored-fact sentence;
- facts stated many ways ("call me Oscar", "my name's oscar", "i've got a dog, his name is Rex");
- a greeting and a fact in one message, and two facts in one message (the acknowledgement names both);
- corrections of name, age, city, colour, food and job ("actually, call me Annie"), which replace the old value;
- questions in other words ("who am I?", "where am I from?"), and never-told facts -> `UNKNOWN_ANSWER`;
- typing noise on the user's side only: all lowercase, missing or extra punctuation, dropped apostrophes and one
  small typo in a non-value word. The model's answers stay clean and repeat a value as the user typed it.

It is a separate module so that `generate_dialogues` (and the shipped tokenizer trained on its output) stay byte
for byte what they were. `train_demo.py --everyday P` draws a share P of each batch from here.
"""

from __future__ import annotations

import random
import re

import demo_dialogues as dd

# Tell phrasings: {v} value, {a} its article, {kind} pet kind, {ka} the kind's article, {pr} his/her.
TELLS: dict[str, tuple[str, ...]] = {
    "name": (
        "I'm {v}.",
        "I am {v}.",
        "Call me {v}.",
        "My name's {v}.",
        "My name is {v}.",
        "The name's {v}.",
        "{v} here.",
        "It's {v}.",
        "People call me {v}.",
        "You can call me {v}.",
        "Name's {v}.",
    ),
    "friend": (
        "My best friend is {v}.",
        "My best friend's name is {v}.",
        "{v} is my best friend.",
        "My best mate is {v}.",
        "My closest friend is {v}.",
        "My best friend is called {v}.",
    ),
    "city": (
        "I live in {v}.",
        "I'm from {v}.",
        "I'm based in {v}.",
        "I come from {v}.",
        "Home is {v}.",
        "I'm living in {v}.",
        "I live in {v} these days.",
    ),
    "pet": (
        "I've got {ka} {kind}, {pr} name is {v}.",
        "I have {ka} {kind} named {v}.",
        "My {kind} is called {v}.",
        "I own {ka} {kind} called {v}.",
        "My {kind}'s name is {v}.",
        "We have {ka} {kind} called {v}.",
    ),
    "colour": (
        "My favourite colour is {v}.",
        "My favorite color is {v}.",
        "I like {v} best.",
        "{v} is my favourite colour.",
        "My fav colour is {v}.",
        "I love the colour {v}.",
    ),
    "age": (
        "I'm {v}.",
        "I'm {v} years old.",
        "I am {v}.",
        "I just turned {v}.",
        "My age is {v}.",
        "I'm {v} now.",
    ),
    "job": (
        "I'm {a} {v}.",
        "I work as {a} {v}.",
        "I'm {a} {v} by profession.",
        "I'm working as {a} {v}.",
        "For a living I'm {a} {v}.",
        "My job? I'm {a} {v}.",
    ),
    "food": (
        "I love {v}.",
        "My favourite food is {v}.",
        "{v} is my favourite food.",
        "I really like {v}.",
        "I could eat {v} every day.",
        "My favorite food is {v}.",
    ),
}
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
# Short clauses for two facts in one message ("I'm Oscar and I live in Lisbon.") and their acknowledgement.
CLAUSES: dict[str, tuple[str, ...]] = {
    "name": ("I'm {v}", "my name is {v}", "call me {v}", "my name's {v}"),
    "friend": ("my best friend is {v}",),
    "city": ("I live in {v}", "I'm from {v}"),
    "pet": ("I have {ka} {kind} called {v}", "I've got {ka} {kind} named {v}"),
    "colour": ("my favourite colour is {v}", "I like {v} best"),
    "age": ("I'm {v} years old", "I just turned {v}"),
    "job": ("I work as {a} {v}", "I'm {a} {v}"),
    "food": ("I love {v}", "my favourite food is {v}"),
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
#: Pairs told together; `name` first where it occurs (people introduce themselves first).
PAIRS = (
    ("name", "city"),
    ("name", "job"),
    ("name", "age"),
    ("name", "pet"),
    ("name", "food"),
    ("name", "colour"),
    ("city", "job"),
    ("colour", "food"),
    ("age", "city"),
    ("job", "food"),
    ("friend", "city"),
)

CORRECTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "name": (
        (
            "Actually, call me {v}.",
            "Sorry, my name is actually {v}.",
            "I go by {v} now.",
            "No wait, it's {v}.",
        ),
        ("Okay, {v} it is!", "Sorry about that, {v}!", "Got it, you're {v} now."),
    ),
    "age": (
        ("Actually, I'm {v}.", "Sorry, I'm {v}, I got that wrong.", "Correction: I'm {v} years old."),
        ("Okay, you are {v} then.", "Got it, {v} it is."),
    ),
    "city": (
        ("Actually, I just moved to {v}.", "I live in {v} now.", "Correction, I'm from {v}."),
        ("Oh, so now you live in {v}.", "Got it, you live in {v} now."),
    ),
    "colour": (
        ("Actually, my favourite colour is {v} now.", "Changed my mind, I like {v} best."),
        ("Okay, {v} it is.", "Noted, your favourite colour is {v} now."),
    ),
    "food": (
        ("Actually, I prefer {v} now.", "These days my favourite food is {v}."),
        ("Noted, {v} it is!", "Okay, your favourite food is {v} now."),
    ),
    "job": (
        ("Actually, I'm {a} {v} now.", "I changed jobs, now I'm {a} {v}."),
        ("Congrats on the new job as {a} {v}!", "Good luck as {a} {v}!"),
    ),
}

ASKS: dict[str, tuple[str, ...]] = {
    "name": (
        "What's my name?",
        "Who am I?",
        "Do you know my name?",
        "What do you call me?",
        "Remember my name?",
        "What is my name?",
        "What did I say my name was?",
    ),
    "friend": (
        "Who's my best friend?",
        "What's my best friend called?",
        "What's the name of my best friend?",
    ),
    "city": (
        "Where do I live?",
        "Where am I from?",
        "Which city do I live in?",
        "Where's home for me?",
        "What city am I in?",
    ),
    "pet": (
        "What's my {kind} called?",
        "What's the name of my {kind}?",
        "What did I call my {kind}?",
        "What's my {kind}'s name?",
    ),
    "pet_kind": ("What pet do I have?", "What kind of animal do I have?", "What's my pet?"),
    "colour": (
        "What's my favourite colour?",
        "What's my favorite color?",
        "Which colour do I like?",
        "What colour do I like best?",
    ),
    "age": ("How old am I?", "What's my age?", "Do you know how old I am?"),
    "job": (
        "What do I do for a living?",
        "What's my job?",
        "What do I do?",
        "What's my profession?",
        "What's my line of work?",
    ),
    "food": ("What's my favourite food?", "What do I like to eat?", "What food do I love?"),
}
ANSWERS: dict[str, tuple[str, ...]] = {key: answers for key, (_, answers) in dd.ASK_TEMPLATES.items()}

GREETINGS: tuple[tuple[str, str], ...] = (
    ("Hi!", "Hello! How can I help?"),
    ("Hi", "Hi there! How can I help?"),
    ("Hello!", "Hello! Nice to talk to you."),
    ("Hello there.", "Hi! Nice to talk to you."),
    ("Hey!", "Hey! What's up?"),
    ("Hey there", "Hello! How can I help?"),
    ("Hiya!", "Hi! Nice to see you."),
    ("Howdy!", "Howdy! How can I help?"),
    ("Good morning!", "Good morning to you too!"),
    ("Good afternoon!", "Good afternoon! How can I help?"),
    ("Good evening!", "Good evening! How are you?"),
    ("Morning!", "Morning! Hope you slept well."),
    ("How are you?", "I'm fine, thanks for asking!"),
    ("How are you doing?", "I'm doing well, thank you!"),
    ("How's it going?", "Pretty well, thank you."),
    ("What's up?", "Not much, just here to chat."),
    ("Thanks!", "You're welcome!"),
    ("Thank you!", "You're welcome!"),
    ("Thanks a lot.", "Happy to help!"),
    ("Nice to meet you!", "Nice to meet you too!"),
    ("Okay.", "Alright!"),
    ("Cool!", "Glad you think so!"),
    ("Bye!", "Bye, talk to you soon!"),
    ("See you later!", "See you!"),
    ("Good night!", "Good night, sleep well!"),
    ("Who are you?", "I'm a small language model."),
    ("What can you do?", "I can chat and remember what you tell me."),
    ("Are you a robot?", "I'm a small language model."),
)

GREETING_PREFIXES = ("Hi!", "Hello!", "Hey,", "Hi there!", "Good morning!", "Hey!", "Hello,")


def _fill(template: str, v: str, kind: str | None, pronoun: str = "his") -> str:
    ka = dd.article(kind) if kind else ""
    a = dd.article(v) if v else ""
    return template.format(v=v, a=a, kind=kind or "", ka=ka, ka_cap=ka.capitalize(), pr=pronoun)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# --- typing noise (queries only; values are never misspelled) -----------------------------------


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 2)
    r = rng.random()
    if r < 0.4:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if r < 0.7:  # drop one letter
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]  # double one letter


def noisy(query: str, values: tuple[str, ...], rng: random.Random) -> str:
    """The query as people type it: any casing, missing or extra punctuation, dropped apostrophes, a typo."""
    protected = {v.lower() for v in values}
    if rng.random() < 0.12:
        words = [m for m in re.finditer(r"[A-Za-z]{4,}", query) if m.group(0).lower() not in protected]
        if words:
            m = rng.choice(words)
            query = query[: m.start()] + _typo(m.group(0), rng) + query[m.end() :]
    if rng.random() < 0.35:
        query = query.lower()
    if rng.random() < 0.15:
        query = query.replace("'", "")
    r = rng.random()
    if r < 0.3:
        query = query.rstrip(".!?")
    elif r < 0.38:
        query = query.rstrip(".!?") + rng.choice(("!!", "...", "!", " ?", "??"))
    if rng.random() < 0.05:
        query = query.replace(",", "")
    return query


# --- turns ---------------------------------------------------------------------------------


def _value_tuple(key: str, facts: dict[str, str]) -> tuple[str, ...]:
    return (facts[key], facts["pet_kind"]) if key == "pet" else (facts[key],)


def _tell(key: str, facts: dict[str, str], rng: random.Random, greet: bool) -> dd.Turn:
    v, kind, pr = facts[key], facts["pet_kind"], rng.choice(("his", "her"))
    query = _fill(rng.choice(TELLS[key]), v, kind, pr)
    if key == "name" and greet:
        answer = rng.choice(("Hi {v}, nice to meet you!", "Hello, {v}! Nice to meet you.")).format(v=v)
    else:
        answer = _cap(_fill(rng.choice(ACKS[key]), v, kind))
        if greet:
            answer = "Hello! " + answer
    if greet:
        query = rng.choice(GREETING_PREFIXES) + " " + query
    return dd.Turn(noisy(query, _value_tuple(key, facts), rng), answer, dd.TELL, key, None, v)


def _tell_two(k1: str, k2: str, facts: dict[str, str], rng: random.Random) -> dd.Turn:
    kind = facts["pet_kind"]
    c1 = _fill(rng.choice(CLAUSES[k1]), facts[k1], kind)
    c2 = _fill(rng.choice(CLAUSES[k2]), facts[k2], kind)
    query = _cap(c1) + rng.choice((" and ", ", and ", ", ")) + c2 + "."
    if k1 == "name" and rng.random() < 0.3:
        query = rng.choice(GREETING_PREFIXES) + " " + query
    n2 = _fill(NOTED[k2], facts[k2], kind)
    if k1 == "name" and rng.random() < 0.5:
        answer = NAME_FIRST_ACK.format(v=facts[k1], n2=n2)
    else:
        answer = rng.choice(TWO_ACKS).format(n1=_fill(NOTED[k1], facts[k1], kind), n2=n2)
    values = _value_tuple(k1, facts) + _value_tuple(k2, facts)
    return dd.Turn(noisy(query, values, rng), _cap(answer), dd.TELL, f"{k1}+{k2}", None, None)


def _correct(key: str, value: str, rng: random.Random) -> dd.Turn:
    queries, answers = CORRECTIONS[key]
    q, a = _fill(rng.choice(queries), value, None), _fill(rng.choice(answers), value, None)
    return dd.Turn(noisy(q, (value,), rng), a, dd.UPDATE, key, None, value)


def _ask(key: str, facts: dict[str, str], after: int, rng: random.Random) -> dd.Turn:
    kind = facts["pet_kind"]
    q = _fill(rng.choice(ASKS[key]), facts[key], kind)
    a = _fill(rng.choice(ANSWERS[key]), facts[key], kind)
    return dd.Turn(noisy(q, (kind,), rng), a, dd.ASK, key, after, facts[key])


def _ask_unknown(key: str, kind: str, rng: random.Random) -> dd.Turn:
    q = _fill(rng.choice(ASKS[key]), "", kind)
    return dd.Turn(noisy(q, (kind,), rng), dd.UNKNOWN_ANSWER, dd.ASK_UNKNOWN, key, None, None)


def _smalltalk(rng: random.Random) -> dd.Turn:
    if rng.random() < 0.55:
        q, a = rng.choice(GREETINGS)
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
    greet_first = rng.random() < 0.3
    for i in range(n):
        told = list(told_at)
        untold = [k for k in dd.ASK_KEYS if k not in told_at and not (k == "pet_kind" and "pet" in told_at)]
        r = rng.random()
        if i == 0 and greet_first:
            turns.append(
                _smalltalk(rng) if rng.random() < 0.5 else dd.Turn(*rng.choice(GREETINGS), dd.SMALLTALK)
            )
        elif told and r < 0.38 and i > 0:
            # the longest-held fact half the time: long delays (4, 8) are where recall is hard
            key = min(told, key=told_at.get) if rng.random() < 0.5 else rng.choice(told)
            ask_key = "pet_kind" if key == "pet" and rng.random() < 0.25 else key
            turns.append(_ask(ask_key, facts, i - told_at[key], rng))
        elif r < 0.62 and len(told) < 5:
            fresh = [k for k in keys if k not in told_at]
            pairs = [p for p in PAIRS if p[0] in fresh and p[1] in fresh]
            if pairs and rng.random() < 0.3:
                k1, k2 = rng.choice(pairs)
                turns.append(_tell_two(k1, k2, facts, rng))
                told_at[k1] = told_at[k2] = i
            elif fresh:
                key = fresh[0]
                turns.append(_tell(key, facts, rng, greet=rng.random() < 0.25))
                told_at[key] = i
            else:
                turns.append(_smalltalk(rng))
        elif r < 0.67 and any(k in CORRECTIONS for k in told):
            key = rng.choice([k for k in told if k in CORRECTIONS])
            others = [v for v in dd.pool_values(dd.FACT_POOL[key], split) if v != facts[key]]
            if key == "name":
                others = [v for v in others if v != facts["friend"]]
            facts[key] = rng.choice(others)
            told_at[key] = i
            turns.append(_correct(key, facts[key], rng))
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
    """Every phrase of this module (placeholders unfilled): tests check none holds a pool value."""
    out = [t for group in (TELLS, ACKS, CLAUSES, ASKS) for ts in group.values() for t in ts]
    out += list(NOTED.values()) + list(TWO_ACKS) + [NAME_FIRST_ACK] + list(GREETING_PREFIXES)
    out += [t for qs, as_ in CORRECTIONS.values() for t in (*qs, *as_)]
    out += [t for pair in GREETINGS for t in pair]
    return out
