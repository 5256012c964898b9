"""Correction phrases of the everyday-typing generator (`demo_everyday.py`): data only.

A corrected fact replaces the old one (issue 19: "actually, call me Annie"). Corrections come whole ("I've since
moved to {v}"), as an opener + any statement of the fact + maybe a closer ("scratch that, " + "I'm based in {v}" +
" now"), or, right after the fact was told, as an opener + the bare new value ("no wait, {v}"). The old value is
never in the message: the acknowledgement names only the new one. Template syntax as in `everyday_phrases.py`;
written from the issue's list of correction kinds, never from `everyday_eval.py`.
"""

from __future__ import annotations

#: Openers of a correction; the clause after them is a fact clause in the new value, maybe with a closer.
CORRECTION_OPENERS = (
    "actually, ",
    "actually ",
    "sorry, ",
    "wait, ",
    "no wait, ",
    "wait no, ",
    "oops, ",
    "whoops, ",
    "my mistake, ",
    "I got that wrong, ",
    "scratch that, ",
    "sorry, I meant ",
    "I meant ",
    "I meant to say ",
    "what I meant was ",
    "hold on, ",
    "hang on, ",
    "let me correct that, ",
    "no, ",
    "no no, ",
    "nope, ",
    "err, ",
    "I misspoke, ",
    "change of plans, ",
    "oh sorry, ",
    "quick update: ",
    "small correction: ",
    "one correction: ",
    "ignore that, ",
    "forget what I said, ",
    "never mind that, ",
    "that's wrong, ",
    "that was wrong, ",
    "oh wait, ",
    "on second thought, ",
    "actually no, ",
    "ugh, typo, ",
    "let me rephrase: ",
    "not quite, ",
    "things changed, ",
    "news: ",
)
#: Words after a corrected clause.
CORRECTION_CLOSERS = (
    " now",
    " actually",
    " instead",
    ", not what I said before",
    ", sorry",
    ", my bad",
    " - sorry for the confusion",
    ", not the other one",
    " these days",
    " from now on",
    ", I got it wrong before",
)
#: The bare new value (a fragment), only right after the fact was told: "no wait, {v}" is clear only then.
CORRECTION_FRAGMENTS: dict[str, tuple[str, ...]] = {
    "name": ("{v}", "{v}, that's my name", "it's {v}", "{v} is my name"),
    "friend": ("{v}", "it's {v}", "{v} is my best friend"),
    "city": ("{v}", "it's {v}", "in {v}", "{v}, not there"),
    "pet": ("{v}", "{pr} name is {v}", "it's {v}", "{v} is {pr} name"),
    "colour": ("{v}", "it's {v}", "{v}, not that one"),
    "age": ("{v}", "I'm {v}", "it's {v}", "{v}, not that"),
    "job": ("{a} {v}", "I'm {a} {v}", "{v}"),
    "food": ("{v}", "it's {v}", "{v}, not that"),
}
#: Whole corrections per key ({v} the new value). The old value is never in the message ("not there anymore").
CORRECTIONS: dict[str, tuple[str, ...]] = {
    "name": (
        "actually, call me {v}",
        "sorry, my name is actually {v}",
        "I go by {v} now",
        "no wait, it's {v}",
        "I meant {v}, that's my name",
        "my real name is {v}",
        "please call me {v} [instead|from now on]",
        "call me {v} from now on",
        "I prefer {v}, call me that",
        "that's not my name, it's {v}",
        "it's {v}, sorry, typo",
        "[I changed my mind|changed my mind], call me {v}",
        "you can call me {v} instead",
    ),
    "friend": (
        "actually my best friend is {v} now",
        "my best friend is {v} these days",
        "{v} is my best friend now",
        "my new best friend is {v}",
        "new [bff|best friend]: {v}",
        "we're not friends anymore, my best friend is {v} now",
        "not them anymore, {v} is my best friend",
    ),
    "city": (
        "actually, I just moved to {v}",
        "I live in {v} now",
        "I['ve| have] [since|just|recently] moved to {v}",
        "I moved to {v} [recently|last month|a few weeks ago]",
        "we relocated to {v}",
        "new [city|place|address]: {v}",
        "I live in {v} now, not there anymore",
        "I don't live there anymore, I'm in {v} now",
        "not there anymore, I['m in| live in| moved to] {v}",
        "we moved, I'm in {v} now",
        "these days I'm in {v}",
        "I've moved house to {v}",
    ),
    "pet": (
        "actually my {kind} is called {v}",
        "we renamed my {kind} [to|] {v}",
        "we renamed {pr_obj}, my {kind} is {v} now",
        "my {kind}'s name is actually {v}",
        "sorry, my {kind} is named {v}",
        "I got the name wrong, my {kind} is called {v}",
    ),
    "colour": (
        "actually, my favourite colour is {v} now",
        "changed my mind, I like the colour {v} best",
        "I prefer the colour {v} now",
        "now my favourite colour is {v}",
        "these days I like the colour {v} more",
        "changed my mind about [colours|my favourite colour], it's {v} now",
        "I've gone off that colour, {v} is my favourite now",
        "my favourite colour is {v} now, not that one",
        "new favourite [colour|color]: {v}",
    ),
    "age": (
        "actually, I'm {v}",
        "sorry, I'm {v}, I got that wrong",
        "I'm {v} actually",
        "wait, I'm {v}, not that",
        "I had a birthday, I'm {v} now",
        "I'm {v} now, I just had my birthday",
        "I got my age wrong, I'm {v}",
        "typo, I'm {v}",
    ),
    "job": (
        "actually, I'm {a} {v} now",
        "I changed [jobs|careers], [now I'm|I'm] {a} {v}[ now|]",
        "I got a new job as {a} {v}",
        "I'm {a} {v} now",
        "I quit, now I work as {a} {v}",
        "I quit that job, I work as {a} {v} now",
        "not doing that anymore, I'm {a} {v} now",
        "new job: {v}",
        "career change: I'm {a} {v} now",
        "I retrained as {a} {v}",
    ),
    "food": (
        "actually, I prefer {v} now",
        "these days my favourite food is {v}",
        "I'm more into {v} now",
        "my favourite food is {v} now",
        "I've switched to {v}, that's my favourite now",
        "changed my mind about food, it's {v} now",
        "I'm over that, {v} is my favourite food now",
        "not into that anymore, I love {v} now",
        "new favourite food: {v}",
        "I've gone off that, I'm into {v} now",
    ),
}
CORRECTION_ACKS: dict[str, tuple[str, ...]] = {
    "name": ("Okay, {v} it is!", "Sorry about that, {v}!", "Got it, you're {v} now."),
    "friend": ("Got it, your best friend is {v} now.", "Okay, {v} it is."),
    "city": ("Oh, so now you live in {v}.", "Got it, you live in {v} now."),
    "pet": ("Okay, your {kind} is called {v}.", "Got it, {v} it is."),
    "colour": ("Okay, {v} it is.", "Noted, your favourite colour is {v} now."),
    "age": ("Okay, you are {v} then.", "Got it, {v} it is."),
    "job": ("Congrats on the new job as {a} {v}!", "Good luck as {a} {v}!"),
    "food": ("Noted, {v} it is!", "Okay, your favourite food is {v} now."),
}


def texts() -> list[str]:
    """Every phrase of this module (unexpanded), for the pool-value test."""
    out = [
        t
        for group in (CORRECTION_FRAGMENTS, CORRECTIONS, CORRECTION_ACKS)
        for ts in group.values()
        for t in ts
    ]
    return out + list(CORRECTION_OPENERS + CORRECTION_CLOSERS)
