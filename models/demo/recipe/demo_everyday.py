"""Everyday-typing conversations for the demo model: the way people actually write to a chat box.

`demo_dialogues.generate_dialogues` speaks in a few clean templates ("My name is Oscar.", "What is my job?");
a model trained only on them answers `hi` with a stored fact and drops "Hi! My name is Oscar." (issue 19).
These conversations keep the same facts, pools, held-out split and turn kinds, and add (phrase lists in
`everyday_phrases.py`, combined here, so each fact comes in hundreds of surface forms):

- greetings and small talk in 99 forms ("hey!", "good morning", "how are you", "thanks", "I'm tired",
  "brb"), answered with small talk, never with a stored-fact sentence; 30% of the time a question from
  `demo_dialogues`' small talk (sums, weather, trivia);
- facts stated 16-24 ways each ("call me Oscar", "my name's oscar", "i've got a dog, his name is Rex"), now and
  then after an opener ("btw", "oh and") or before a closer ("lol", "by the way");
- a greeting and a fact in one message (26 greetings), and two facts in one message: any two facts but name and
  friend, in either order, with 11 joiners (the acknowledgement names both);
- corrections of every fact, whole ("I moved to Rome recently") or an opener + a statement ("sorry, I meant" +
  "call me Ann"), which replace the old value;
- questions in other words: 7-14 direct forms per fact plus a lead and an embedded clause ("do you remember" +
  "where I live"); never-told facts -> `UNKNOWN_ANSWER`;
- typing noise on the user's side only: any casing, missing or extra punctuation, dropped apostrophes, chat
  shorthand ("u", "ur", "pls") and one or two small typos in non-value words. The model's answers stay clean and
  repeat a value as the user typed it.

It is a separate module so that `generate_dialogues` (and the shipped tokenizer trained on its output) stay byte
for byte what they were. `train_demo.py --everyday P` draws a share P of each batch from here.
"""

from __future__ import annotations

import random
import re

import demo_dialogues as dd
import everyday_phrases as ep

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

# --- small talk -----------------------------------------------------------------------------------------------

#: (query, answer) pairs that are not facts: greetings, thanks, how-are-yous, moods ("I'm tired": not a name), the
#: day, the bot. Every answer is small talk, never a fact sentence.
SMALLTALK: tuple[tuple[str, str], ...] = (
    ("Hi!", "Hello! How can I help?"),
    ("Hi", "Hi there! How can I help?"),
    ("hii", "Hi! How can I help?"),
    ("Hello!", "Hello! Nice to talk to you."),
    ("Hello", "Hello! How can I help?"),
    ("Hello there.", "Hi! Nice to talk to you."),
    ("Hey!", "Hey! What's up?"),
    ("Hey", "Hey! How can I help?"),
    ("Hey there", "Hello! How can I help?"),
    ("heyy", "Hey! What's up?"),
    ("Hiya!", "Hi! Nice to see you."),
    ("Howdy!", "Howdy! How can I help?"),
    ("Good morning!", "Good morning to you too!"),
    ("Good afternoon!", "Good afternoon! How can I help?"),
    ("Good evening!", "Good evening! How are you?"),
    ("Morning!", "Morning! Hope you slept well."),
    ("How are you?", "I'm fine, thanks for asking!"),
    ("How are you doing?", "I'm doing well, thank you!"),
    ("How's it going?", "Pretty well, thank you."),
    ("How was your day?", "Quiet and pleasant, thanks for asking."),
    ("You okay?", "I'm fine, thanks for asking!"),
    ("What's up?", "Not much, just here to chat."),
    ("Thanks!", "You're welcome!"),
    ("Thank you!", "You're welcome!"),
    ("Thanks a lot.", "Happy to help!"),
    ("Appreciate it.", "Happy to help!"),
    ("Nice to meet you!", "Nice to meet you too!"),
    ("Okay.", "Alright!"),
    ("Alright.", "Alright!"),
    ("Sure.", "Great!"),
    ("Cool!", "Glad you think so!"),
    ("Nice!", "Glad you think so!"),
    ("Awesome!", "Glad you think so!"),
    ("Great!", "Glad to hear it!"),
    ("Wow.", "Indeed!"),
    ("Hmm.", "Take your time."),
    ("Haha", "Glad that made you laugh!"),
    ("Yes.", "Okay!"),
    ("No.", "Okay, no problem."),
    ("Maybe.", "Fair enough."),
    ("I see.", "Okay!"),
    ("Got it.", "Great!"),
    ("Sorry.", "No worries at all."),
    ("My bad.", "No worries at all."),
    ("No worries.", "Thanks!"),
    ("Bye!", "Bye, talk to you soon!"),
    ("Goodbye.", "Goodbye, take care!"),
    ("See you later!", "See you!"),
    ("See ya", "See you!"),
    ("Talk later.", "Talk to you soon!"),
    ("Good night!", "Good night, sleep well!"),
    ("Night!", "Good night, sleep well!"),
    ("Gotta go.", "Okay, talk to you soon!"),
    ("Brb", "Sure, I'll be here."),
    ("I'm back.", "Welcome back!"),
    ("I'm tired.", "Sorry to hear that, maybe take a break."),
    ("I'm so tired today.", "Sorry to hear that, rest if you can."),
    ("I'm bored.", "Want to hear a joke?"),
    ("I'm hungry.", "Maybe it's time for a snack!"),
    ("I'm sleepy.", "Maybe it's time for a nap."),
    ("I'm busy today.", "Good luck with everything today!"),
    ("I'm happy today.", "That's great to hear!"),
    ("I'm a bit sad.", "I'm sorry, I hope things get better."),
    ("I'm stressed.", "Take a deep breath, you've got this."),
    ("I'm fine.", "Glad to hear it!"),
    ("I'm good, thanks.", "Glad to hear it!"),
    ("I'm great!", "That's great to hear!"),
    ("Not bad.", "Glad to hear it!"),
    ("I'm excited!", "That's great to hear!"),
    ("I'm at home.", "Sounds cozy!"),
    ("I'm feeling sick.", "I'm sorry, get well soon!"),
    ("I had a long day.", "Sounds like you deserve some rest."),
    ("Work was busy today.", "Sounds like you deserve some rest."),
    ("I just woke up.", "Good morning, then!"),
    ("I went for a walk.", "Walks are good for you!"),
    ("I watched a movie last night.", "Sounds like a nice evening!"),
    ("I'm making dinner.", "Enjoy your meal!"),
    ("I read a book today.", "Reading is a great way to relax."),
    ("It's my day off.", "Enjoy your day off!"),
    ("It's the weekend!", "Enjoy the weekend!"),
    ("It's cold today.", "Stay warm!"),
    ("It's so windy out.", "Hold on to your hat!"),
    ("Any plans today?", "Just chatting with you!"),
    ("What should I do today?", "Maybe go for a walk, or read a book."),
    ("Can you help me?", "Of course, what do you need?"),
    ("Are you there?", "Yes, I'm here!"),
    ("Who are you?", "I'm a small language model."),
    ("What are you?", "I'm a small language model."),
    ("What can you do?", "I can chat and remember what you tell me."),
    ("Are you a robot?", "I'm a small language model."),
    ("Are you real?", "I'm a small language model."),
    ("Do you sleep?", "No, I'm always here to chat."),
    ("What time is it?", "I can't see a clock, sorry."),
    ("You're funny.", "Thanks, I try!"),
    ("Good job!", "Thank you!"),
    ("That's funny.", "Glad that made you laugh!"),
    ("Interesting.", "Glad you think so!"),
    ("Tell me something.", "Honey never spoils."),
    ("Let's chat.", "Sure, what's on your mind?"),
)


_PAIRABLE = tuple(ep.TELLS)  # any two facts can come in one message, in either order
#: Chat shorthand people type: whole words, replaced in queries only (never in a value).
_SHORTHAND = (
    (r"\byou\b", "u"),
    (r"\byour\b", "ur"),
    (r"\bare\b", "r"),
    (r"\bplease\b", "pls"),
    (r"\bthanks\b", "thx"),
    (r"\bbecause\b", "cuz"),
    (r"\bfavourite\b", "fav"),
    (r"\band\b", "n"),
    (r"\bI\b", "i"),
)


def _fill(template: str, v: str, kind: str | None, pronoun: str = "his") -> str:
    ka = dd.article(kind) if kind else ""
    a = dd.article(v) if v else ""
    obj = "him" if pronoun == "his" else "her"
    return template.format(v=v, a=a, kind=kind or "", ka=ka, ka_cap=ka.capitalize(), pr=pronoun, pr_obj=obj)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _sentence(core: str, rng: random.Random, end: str = ".") -> str:
    """A clause as a message: capitalised most of the time, with its final punctuation."""
    return (_cap(core) if rng.random() < 0.8 else core) + end


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


def noisy(query: str, values: tuple[str, ...], rng: random.Random) -> str:
    """The query as people type it: any casing, missing or extra punctuation, dropped apostrophes, chat
    shorthand ("u", "ur", "pls") and one or two small typos, never in a value."""
    protected = {v.lower() for v in values}
    for _ in range(2 if rng.random() < 0.2 else 1):
        if rng.random() < 0.12:
            words = [m for m in re.finditer(r"[A-Za-z]{4,}", query) if m.group(0).lower() not in protected]
            if words:
                m = rng.choice(words)
                query = query[: m.start()] + _typo(m.group(0), rng) + query[m.end() :]
    if rng.random() < 0.12:
        pattern, short = rng.choice(_SHORTHAND)
        if not any(short == v for v in protected):
            query = re.sub(pattern, short, query)
    r = rng.random()
    if r < 0.4:
        query = query.lower()
    elif r < 0.45:
        query = _cap(query.lower())
    if rng.random() < 0.18:
        query = query.replace("'", "")
    r = rng.random()
    if r < 0.32:
        query = query.rstrip(".!?")
    elif r < 0.42:
        query = query.rstrip(".!?") + rng.choice(("!!", "...", "!", " ?", "??", "!!!", " :)", ".."))
    if rng.random() < 0.06:
        query = query.replace(",", "")
    if rng.random() < 0.03:
        query = " " + query if rng.random() < 0.5 else query + " "
    return query


# --- turns ---------------------------------------------------------------------------------


def _value_tuple(key: str, facts: dict[str, str]) -> tuple[str, ...]:
    return (facts[key], facts["pet_kind"]) if key == "pet" else (facts[key],)


def _core(key: str, facts: dict[str, str], rng: random.Random, pronoun: str) -> str:
    return _fill(rng.choice(ep.TELLS[key]), facts[key], facts["pet_kind"], pronoun)


def _dress(core: str, rng: random.Random, greet: bool) -> str:
    """A fact clause with an opener or a closer now and then, and a greeting in front when `greet`."""
    if rng.random() < 0.2:
        core = rng.choice(ep.OPENERS) + core
    text = _sentence(core, rng)
    if rng.random() < 0.08:
        text = text.rstrip(".") + rng.choice(ep.CLOSERS)
    if greet:
        text = rng.choice(ep.GREETING_PREFIXES) + " " + text
    return text


def _tell(key: str, facts: dict[str, str], rng: random.Random, greet: bool) -> dd.Turn:
    v, kind, pr = facts[key], facts["pet_kind"], rng.choice(("his", "her"))
    query = _dress(_core(key, facts, rng, pr), rng, greet)
    if key == "name" and greet:
        answer = rng.choice(("Hi {v}, nice to meet you!", "Hello, {v}! Nice to meet you.")).format(v=v)
    else:
        answer = _cap(_fill(rng.choice(ACKS[key]), v, kind))
        if greet:
            answer = "Hello! " + answer
    return dd.Turn(noisy(query, _value_tuple(key, facts), rng), answer, dd.TELL, key, None, v)


def _tell_two(k1: str, k2: str, facts: dict[str, str], rng: random.Random) -> dd.Turn:
    kind = facts["pet_kind"]
    c1 = _core(k1, facts, rng, rng.choice(("his", "her")))
    c2 = _core(k2, facts, rng, rng.choice(("his", "her")))
    joiner = rng.choice(ep.JOINERS)
    if joiner.startswith(".") and rng.random() < 0.7:
        c2 = _cap(c2)
    body = c1 + joiner + c2
    # long pairs go bare: with stand-in values an interaction must stay within the trainer's --width 80
    query = _dress(body, rng, greet=rng.random() < 0.25) if len(body) < 52 else _sentence(body, rng)
    n2 = _fill(NOTED[k2], facts[k2], kind)
    if k1 == "name" and rng.random() < 0.5:
        answer = NAME_FIRST_ACK.format(v=facts[k1], n2=n2)
    else:
        answer = rng.choice(TWO_ACKS).format(n1=_fill(NOTED[k1], facts[k1], kind), n2=n2)
    values = _value_tuple(k1, facts) + _value_tuple(k2, facts)
    return dd.Turn(noisy(query, values, rng), _cap(answer), dd.TELL, f"{k1}+{k2}", None, None)


def _correct(key: str, facts: dict[str, str], rng: random.Random) -> dd.Turn:
    value, kind = facts[key], facts["pet_kind"]
    if rng.random() < 0.5:
        core = _fill(rng.choice(ep.CORRECTIONS[key]), value, kind)
    else:
        core = rng.choice(ep.CORRECTION_OPENERS) + _core(key, facts, rng, rng.choice(("his", "her")))
        if rng.random() < 0.4:
            core += rng.choice((" now", " actually"))
    answer = _fill(rng.choice(ep.CORRECTION_ACKS[key]), value, kind)
    return dd.Turn(
        noisy(_sentence(core, rng), _value_tuple(key, facts), rng), answer, dd.UPDATE, key, None, value
    )


def _question(key: str, kind: str, rng: random.Random) -> str:
    """A question about `key` in one of many forms: direct, or a lead + an embedded clause."""
    if rng.random() < 0.3:
        q = rng.choice(ep.LEADS) + " " + rng.choice(ep.EMBEDDED[key])
    else:
        q = rng.choice(ep.ASKS[key])
        if rng.random() < 0.12:
            q = rng.choice(("so ", "hey, ", "ok, ", "and ", "btw ", "um ", "quick one: ")) + q
    q = _fill(q, "", kind)
    return (_cap(q) if rng.random() < 0.7 else q) + rng.choice(ep.ASK_ENDS)


def _ask(key: str, facts: dict[str, str], after: int, rng: random.Random) -> dd.Turn:
    kind = facts["pet_kind"]
    a = _fill(rng.choice(ANSWERS[key]), facts[key], kind)
    return dd.Turn(noisy(_question(key, kind, rng), (kind,), rng), a, dd.ASK, key, after, facts[key])


def _ask_unknown(key: str, kind: str, rng: random.Random) -> dd.Turn:
    q = noisy(_question(key, kind, rng), (kind,), rng)
    return dd.Turn(q, dd.UNKNOWN_ANSWER, dd.ASK_UNKNOWN, key, None, None)


def _smalltalk(rng: random.Random) -> dd.Turn:
    if rng.random() < 0.7:
        q, a = rng.choice(SMALLTALK)
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
            turns.append(_correct(key, facts, rng))
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
    out = [
        t
        for group in (ep.TELLS, ACKS, ep.ASKS, ep.EMBEDDED, ep.CORRECTIONS)
        for ts in group.values()
        for t in ts
    ]
    out += [t for ts in ep.CORRECTION_ACKS.values() for t in ts]
    out += list(NOTED.values()) + list(TWO_ACKS) + [NAME_FIRST_ACK] + list(ep.GREETING_PREFIXES)
    out += list(ep.OPENERS + ep.CLOSERS + ep.JOINERS + ep.CORRECTION_OPENERS + ep.LEADS + ep.ASK_ENDS)
    out += [t for pair in SMALLTALK for t in pair]
    return out
