"""Question phrases of the everyday-typing generator (`demo_everyday.py`): data only.

Issue 19: a fact must be recalled when asked in other words ("who am I?", "what do I do for a living?", "where am
I from?"). A question comes direct (`ASKS`), as a lead + an embedded question ("do you remember" + "where I
live"), as a prefix + a direct question ("quick question, " + ...), or as a fragment ("and my job?"), then an
ending. Template syntax as in `everyday_phrases.py` (`[a|b]` one of, `[a|]` optional); {kind} the pet kind.
Written from the issue's list of question kinds and general English, never from `everyday_eval.py`.
"""

from __future__ import annotations

_FAV = "[favourite|favorite|fav|fave]"
_FAV_COLOUR = "[favourite|favorite|fav]"
_COLOUR = "[colour|color]"

#: Direct questions per key (an ending and noise are added by the generator).
ASKS: dict[str, tuple[str, ...]] = {
    "name": (
        "[what's|what is] my name",
        "what was my name[ again|]",
        "who am I[ again|]",
        "[do you know|do you remember|can you remember|you remember] my name",
        "[do you know|do you remember] who I am",
        "what do you call me",
        "what did I [say|tell you] my name [was|is]",
        "what name did I [tell you|give]",
        "what am I called",
        "who is talking to you",
        "who are you talking to",
        "say my name",
        "you know who I am",
        "remember my name",
        "who's this talking",
        "what do people call me",
        "what's my first name",
    ),
    "friend": (
        "[who's|who is] my [best friend|bff|bestie|best mate|closest friend|best pal]",
        "who was my [best friend|bestie] again",
        "what's my [best friend|bestie|best mate]'s name",
        "what's [the name of my best friend|my best friend called]",
        "who did I say [was my best friend|is my best friend]",
        "who am I best friends with",
        "who's my number one friend",
        "name my best friend",
        "who's my closest mate",
        "my best friend is who",
        "what is my best friend called",
        "[do you know|do you remember|you remember] my best friend",
    ),
    "city": (
        "where do I [live|live now|live these days|call home|reside|currently live]",
        "where am I [from|based|living|staying|located|originally from|living now]",
        "where did I [grow up|say I live|say I was from|tell you I live|move to]",
        "[which|what] [city|place] [do I live in|am I from|am I in|am I based in|do I call home]",
        "[which|what] city did I say I live in",
        "what's my [city|town|hometown|home town|home city]",
        "what is my [city|hometown]",
        "where's [home|my home|my place]",
        "where is my home",
        "where do I call home",
        "where's my hometown",
        "where did I say home is",
        "do you know where I live",
    ),
    "pet": (
        "[what's|what is] my {kind}[ called| named|'s name]",
        "what's my {kind}'s name again",
        "what was my {kind} called[ again|]",
        "what did I [call|name] my {kind}",
        "what do I call my {kind}",
        "what's my [pet|pet {kind}][ called|'s name]",
        "what's [his|her] name, my {kind}",
        "[do you know|do you remember|you remember] my {kind}'s name",
        "what did I say my {kind} was called",
        "who's my {kind}",
        "my {kind}'s name is what",
    ),
    "pet_kind": (
        "what [pet|animal|kind of pet|kind of animal|type of pet|sort of pet|sort of animal] do I [have|own|keep]",
        "what's my pet",
        "what is my pet",
        "do I have a pet",
        "what animal is my pet",
        "which pet do I have",
        "what animal do I live with",
        "what pet did I tell you about",
        "what kind of animal is my pet",
        "what's the animal I have",
        "[do you know|do you remember] what pet I have",
        "what kind of pet did I say I have",
    ),
    "colour": (
        "[what's|what is] my {fav} {colour}",
        "what was my {fav} {colour} again",
        "[which|what] {colour} do I [like|love][ best| most| the most|]",
        "what {colour} did I say I [liked|love]",
        "what's my {colour}",
        "[do you know|do you remember] my {fav} {colour}",
        "what {colour} am I into",
        "what's the {colour} I like",
        "my {fav} {colour} is what",
        "which {colour} did I pick",
    ),
    "age": (
        "how old am I[ again| now|]",
        "[what's|what is] my age",
        "how old did I say I am",
        "[do you know|do you remember] how old I am",
        "what age did I tell you",
        "[do you know|do you remember] my age",
        "my age is what",
        "how old was I again",
    ),
    "job": (
        "what do I do[ for a living| for work| for money|]",
        "what do I do again",
        "what's my [job|profession|line of work|trade|work|day job|job title]",
        "what is my [job|profession]",
        "what [kind|sort] of work do I do",
        "what job do I [have|do]",
        "how do I [make|earn] [a living|my living]",
        "what did I say I do for a living",
        "what did I say my job [was|is]",
        "what am I by [profession|trade]",
        "what line of work am I in",
        "what was my job again",
        "[do you know|do you remember] my job",
    ),
    "food": (
        "[what's|what is] my {fav} [food|dish|meal]",
        "what do I [like|love] to eat",
        "what [food|dish] do I [love|like|like best|prefer]",
        "which food do I [like|love][ best|]",
        "what could I eat every day",
        "what did I say I [like|love] to eat",
        "what food am I [obsessed with|crazy about]",
        "what's my comfort food",
        "what food did I say I like",
        "[do you know|do you remember] my {fav} food",
        "what do I always order",
        "what's the food I love",
    ),
}

#: Embedded questions: a lead + a clause ("do you remember" + "where I live").
LEADS = (
    "do you remember",
    "do you know",
    "can you tell me",
    "remind me",
    "tell me",
    "any idea",
    "do you recall",
    "could you remind me",
    "you remember",
    "can you remember",
    "do you still remember",
    "I bet you don't remember",
    "bet you forgot",
    "let's see if you remember",
    "can you recall",
    "would you remind me",
    "mind telling me",
    "I wonder if you remember",
    "did I tell you",
    "did I mention",
    "have I told you",
    "remind me again",
    "tell me again",
    "I can't remember",
    "I don't remember",
    "any clue",
    "I wanna know if you remember",
    "quick question: do you know",
    "so do you know",
)
EMBEDDED: dict[str, tuple[str, ...]] = {
    "name": (
        "who I am",
        "what to call me",
        "the name I gave you",
        "what you should call me",
        "what my name was",
    ),
    "friend": (
        "who my [best friend|bff|bestie|best mate] is",
        "my best friend's name",
        "the name of my best friend",
        "who I'm best friends with",
        "what my best friend is called",
    ),
    "city": (
        "where I [live|'m from|'m based|grew up|'m living|live now|call home|said I live]",
        "[which|what] [city|town] I [live in|'m from|'m in]",
        "my [city|hometown|home town]",
        "where home is for me",
    ),
    "pet": (
        "what my {kind} is called",
        "my {kind}'s name",
        "the name of my {kind}",
        "what I [call|named|called] my {kind}",
        "my pet's name",
    ),
    "pet_kind": (
        "what [pet|animal|kind of pet] I [have|own]",
        "what kind of animal my pet is",
        "what my pet is",
    ),
    "colour": (
        "my {fav} {colour}",
        "[what|which] {colour} I like[ best| most|]",
        "what my {fav} {colour} is",
    ),
    "age": ("my age", "the age I told you", "what age I am"),
    "job": (
        "what I do[ for a living| for work|]",
        "what my [job|profession|line of work] is",
        "my [job|profession|line of work|occupation]",
        "what I work as",
    ),
    "food": (
        "my {fav} food",
        "what I [like|love] to eat",
        "what food I [love|like best]",
        "what my {fav} food is",
    ),
}
#: Words before a direct question ("quick question, where do I live?").
PREFIXES = (
    "so ",
    "hey, ",
    "ok, ",
    "and ",
    "btw ",
    "um ",
    "quick one: ",
    "quick question, ",
    "I forgot, ",
    "test time: ",
    "pop quiz: ",
    "memory test: ",
    "question: ",
    "random question, ",
    "one more thing, ",
    "also, ",
    "oh, ",
    "hmm, ",
    "wait, ",
    "real quick, ",
    "just checking, ",
    "sorry, ",
    "ok so ",
    "alright, ",
    "let's test you: ",
)
#: Nouns for fragment questions ("and my job?", "what about my age?").
NOUNS: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "friend": ("best friend", "bff", "bestie"),
    "city": ("city", "hometown", "town"),
    "pet": ("{kind}'s name", "pet's name"),
    "pet_kind": ("pet",),
    "colour": ("{fav} {colour}",),
    "age": ("age",),
    "job": ("job", "profession", "line of work"),
    "food": ("{fav} food",),
}
FRAGMENT_LEADS = ("and my", "what about my", "how about my", "ok, and my", "now my")
#: Question endings ("what's my name again?").
ASK_ENDS = (
    "?",
    "?",
    "?",
    "??",
    "",
    " please?",
    "? :)",
    ", do you know?",
    " pls?",
    ", remember?",
    "? just checking",
    ", any idea?",
    "? lol",
    "?!",
    "???",
    ", if you remember?",
    "? I forgot",
)


def _macros(group: dict[str, tuple[str, ...]]) -> None:
    """Writes the shared alternations ({fav}, {colour}) into the templates, in place."""
    for key, ts in group.items():
        fav = _FAV_COLOUR if key == "colour" else _FAV
        group[key] = tuple(t.replace("{fav}", fav).replace("{colour}", _COLOUR) for t in ts)


for _group in (ASKS, EMBEDDED, NOUNS):
    _macros(_group)


def texts() -> list[str]:
    """Every phrase of this module (unexpanded), for the pool-value test."""
    out = [t for group in (ASKS, EMBEDDED, NOUNS) for ts in group.values() for t in ts]
    return out + list(LEADS + PREFIXES + FRAGMENT_LEADS + ASK_ENDS)
