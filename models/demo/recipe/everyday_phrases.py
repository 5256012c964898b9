"""Statement phrases of the everyday-typing generator (`demo_everyday.py`): data only, kept apart from the logic.

Written from issue 19's description of how people type, by linguistic phenomenon (word choice per fact, sentence
shape, hedges and adverbials, ellipsis), never from `everyday_eval.py`, whose phrases must stay independent of
these (`tests/test_everyday.py` checks that no evaluation query is a sentence the generators produce). Questions
are in `everyday_questions.py`, corrections in `everyday_corrections.py`, small talk in `everyday_smalltalk.py`.

Templates are compact grammars: `[a|b|c]` is one of the alternatives, `[a|]` an optional part (innermost groups
first, so groups nest), expanded at random by `demo_everyday.expand`, so one line stands for dozens of sentences.
Placeholders: {v} the value, {a} its article, {kind} the pet kind, {ka} the kind's article, {pr}/{pr_obj}
his/her and him/her. No phrase may hold a pool value (`test_phrases_hold_no_pool_value`): no "buddy" (a pet name),
no colour words outside {v}, no digits (ages), no animal words outside {kind}.

Every form carries a word that says which fact it is ("live", "colour", "best friend", an article before a job):
with stand-in values the value itself says nothing, so a frame without a cue would teach guessing. `I love {v}`
stays the food's, `I'm {v}` the name's (ages are digits).
"""

from __future__ import annotations

# (re-exported: these lists lived here before they got modules of their own)
from everyday_corrections import CORRECTION_ACKS, CORRECTION_OPENERS, CORRECTIONS  # noqa: F401
from everyday_questions import ASK_ENDS, ASKS, EMBEDDED, LEADS  # noqa: F401

_FAV = "[favourite|favorite|fav|fave]"
_FAV_COLOUR = "[favourite|favorite|fav]"
_COLOUR = "[colour|color]"

# --- telling a fact: whole clauses -----------------------------------------------------------------------------

#: Clauses with a subject, per fact. Contractions are written one way; `noisy` flips them both ways.
TELLS: dict[str, tuple[str, ...]] = {
    "name": (
        "I'm {v}",
        "I am {v}",
        "[just|please|you can|u can|feel free to|go ahead and|you may] call me {v}",
        "call me {v}[ please|, everyone does|]",
        "my name's {v}",
        "my name is {v}",
        "my [first|given] name is {v}",
        "name's {v}",
        "{v} here",
        "it's {v}",
        "it's {v}, by the way",
        "{v}'s my name",
        "{v} is [my name|the name|what people call me|what everyone calls me|my first name]",
        "[people|my friends|most people|folks] call me {v}",
        "[everyone|everybody] calls me {v}",
        "I go by {v}[ these days|]",
        "I'm known as {v}",
        "they call me {v}",
        "my name? {v}",
        "me, I'm {v}",
        "[this is|you're talking to|you're chatting with] {v}",
        "I'm {v}, [nice|pleased|glad|good] to meet you",
        "[nice|pleased|glad] to meet you, I'm {v}",
        "let me introduce myself, I'm {v}",
        "[allow me to|let me] introduce myself: {v}",
        "my parents named me {v}",
        "I'd like you to call me {v}",
        "{v}, that's me",
        "I'm the one called {v}",
        "my friends know me as {v}",
    ),
    "friend": (
        "my [best friend|bestie|best mate|closest friend|best pal] is [called|named|] {v}",
        "my [best friend|bestie|best mate]'s name is {v}",
        "{v} is my [best friend|bff|bestie|best mate|closest friend|best pal|favourite person]",
        "{v}'s my [best friend|bff|bestie|best mate]",
        "I have a best friend [called|named] {v}",
        "I've got a best friend [called|named] {v}",
        "[{v} and I|me and {v}] are best friends",
        "[{v} and I|me and {v}] have been best friends [since school|for years|since we were kids|forever]",
        "I'm best friends with {v}",
        "I've been best friends with {v} [since school|for years|since we were little|since uni]",
        "{v} has been my best friend [since school|since we were kids|forever]",
        "my best friend goes by {v}",
        "my best friend in the whole world is {v}",
        "the best friend I have is {v}",
        "my number one friend is {v}",
        "my [best friend|bestie] would be {v}",
        "I'd say my best friend is {v}",
        "the person I'm closest to is {v}",
        "[best friend|bff|bestie]? that's {v}",
        "when it comes to friends, {v} is the best one I have",
        "my best friend, {v}, is the greatest",
    ),
    "city": (
        "I [live|am living] in {v}[ these days| at the moment| right now| now| for now|]",
        "I [currently|now|still] live in {v}",
        "I live [over|out|down|up] in {v}",
        "I've [lived|been living] in {v} [for years|my whole life|since I was a kid|for a while now|for ages]",
        "I'm [from|originally from|based in|based out of|located in|living in|staying in|settled in] {v}",
        "I'm in {v}[ at the moment| right now| these days|]",
        "I stay in {v} [these days|at the moment|most of the year|for now]",
        "I've been staying in {v} [for a while|lately|since last year]",
        "I come from {v}",
        "I was [born|raised|born and raised] in {v}",
        "I grew up in {v} and still live there",
        "I grew up in {v}",
        "I [moved|relocated] to {v}[ a while ago| last year| a few years back| recently|]",
        "I call {v} home",
        "home is {v}[ for me|]",
        "home for me is {v}",
        "my [home|place|flat|apartment|house] is in {v}",
        "I've got a [place|flat|house] in {v}",
        "my [city|town|home city] is {v}",
        "{v} is [home|where I live|where I'm from|where I grew up|where I'm based|my home|my city|my hometown]",
        "{v}'s [home|where I live|my city]",
        "{v} is where I [call home|live now|live these days|ended up|settled]",
        "{v}, that's [where I live|home|my city|where I'm from|where I'm based]",
        "{v} - that's [home|where I live]",
        "I'm {a} {v} [native|local]",
        "I'm writing from {v}",
        "I'm a resident of {v}",
        "I live in the city of {v}",
        "I'm from the city of {v}",
        "my address is in {v}",
        "I've made {v} my home",
    ),
    "pet": (
        "I[ have| own|'ve got| have got| got] {ka} {kind} [called|named] {v}",
        "I've got {ka} {kind}, {pr} name's {v}",
        "I have {ka} {kind} and {pr} name is {v}",
        "I have {ka} {kind}. {pr} name is {v}",
        "I[ have| own|'ve got] {ka} {kind}, [called|named] {v}",
        "my {kind} is [called|named] {v}",
        "my {kind}'s [name is|called] {v}",
        "my [pet|little] {kind} is [called|named] {v}",
        "my {kind} [goes by|answers to] {v}",
        "{v} is my {kind}",
        "{v}'s my {kind}",
        "{v} is [the name of|what I call|what I named] my {kind}",
        "I [named|called] my {kind} {v}",
        "my {kind}? [{pr} name's|{pr} name is|called|named] {v}",
        "there's my {kind}, {v}",
        "we[ have|'ve got| own] {ka} {kind} [called|named] {v}",
        "my pet is {ka} {kind} [named|called] {v}",
        "I got {ka} {kind}[ last year| recently|], I named {pr_obj} {v}",
        "I adopted {ka} {kind}[ named| called| and named {pr_obj}] {v}",
        "I live with {ka} {kind} [called|named] {v}",
        "I'm the proud owner of {ka} {kind} [named|called] {v}",
        "meet {v}, my {kind}",
        "say hi to {v}, my {kind}",
        "I've had {ka} {kind} [named|called] {v} [for years|since last year|for a while]",
        "I have a pet {kind}, {pr} name is {v}",
    ),
    "colour": (
        "my {fav} {colour} is {v}",
        "my {fav} {colour}'s {v}",
        "{v} is my {fav} {colour}",
        "{v}'s my {fav} {colour}",
        "{v} has always been my {fav} {colour}",
        "{v} is [the colour I like best|my colour]",
        "my [colour|color|favourite shade] is {v}",
        "the {colour} I like [best|most] is {v}",
        "I [really|] [like|love|adore] the {colour} {v}",
        "I like the {colour} {v} [the most|best|more than any other]",
        "I'm a [big|huge] fan of the {colour} {v}",
        "I'm [really|] into the {colour} {v}",
        "[colour|color]-wise, I [love|like|go for|pick] {v}",
        "when it comes to [colours|colors], [I love|I like|I pick|I always pick|it's] {v}",
        "if I had to pick a {colour}, [it'd be|I'd pick|I'd say] {v}",
        "out of all the [colours|colors], I like {v} [best|most]",
        "I [always|usually] [wear|pick|choose|go for] {v}, it's my {colour}",
        "I'm {a} {v} person when it comes to [colours|colors]",
        "no {colour} beats {v}",
        "I've loved the {colour} {v} since I was [a kid|little]",
        "my {fav} {colour} has to be {v}",
        "I think my {fav} {colour} is {v}",
    ),
    "age": (
        "I'm {v}[ years old| y/o| now| already|]",
        "I am {v}[ years old|]",
        "I['ve| have|] just turned {v}",
        "I turned {v} [this year|last week|recently|a few weeks ago]",
        "my age is {v}",
        "{v} is my age",
        "I'm aged {v}",
        "age: {v}",
        "[age|my age]? {v}",
        "[I'll be honest|believe it or not|not gonna lie|if you must know], I'm {v}",
        "I'm {v}, [believe it or not|if you must know|if that matters]",
        "{v} years [old|young]",
        "I'm {v} years young",
        "I was born {v} years ago",
        "I've been around for {v} years",
        "I'm {v} and [counting|feeling it]",
        "as of [this year|my last birthday], I'm {v}",
    ),
    "job": (
        "I'm {a} {v}[ by profession| by trade| professionally| at work| full time| part time|]",
        "I am {a} {v}",
        "I['m working| work] as {a} {v}[ right now| at the moment|]",
        "I work [full time|part time] as {a} {v}",
        "for a living, I['m| work as] {a} {v}",
        "[my job|my work|my profession|my line of work]? I'm {a} {v}",
        "my [job|profession|occupation|trade|day job] is {v}",
        "I'm employed as {a} {v}",
        "I make [a living|my living|my money] as {a} {v}",
        "by day I'm {a} {v}",
        "I've been {a} {v} [for years|for a while now|since I finished school|my whole career]",
        "[work-wise|job-wise|professionally], I'm {a} {v}",
        "I do {v} work[ for a living|]",
        "{v} is my [job|profession|trade|line of work]",
        "{a} {v} is what I do[ for a living| for work|]",
        "{a} {v}, that's [what I do|my job]",
        "I'm a professional {v}",
        "I have a job as {a} {v}",
        "I just started working as {a} {v}",
        "I get paid to work as {a} {v}",
        "I'm {a} {v}, that's my job",
        "I earn my money working as {a} {v}",
    ),
    "food": (
        "I [love|adore|really like|can't get enough of|live for] {v}",
        "I'm [obsessed with|crazy about|nuts about|mad about|a huge fan of|all about] {v}",
        "I'm [really|] into {v}[ lately| these days|]",
        "I love eating {v}",
        "my {fav} [food|dish|meal|thing to eat] is {v}",
        "my {fav} food's {v}",
        "{v} is my {fav} [food|dish|meal|thing to eat]",
        "{v}'s my {fav} food",
        "I could eat {v} [every day|all day|every single day|forever]",
        "I'd eat {v} [every day|every single day|for every meal][ if I could|]",
        "I'm [such a|a real|a total] sucker for {v}",
        "[food-wise|when it comes to food], [I love|nothing beats|it's all about] {v}",
        "my [go-to|comfort] [food|meal] is {v}",
        "I [always|usually] order {v}",
        "I eat {v} [all the time|whenever I can|every chance I get]",
        "{v} is [the best food ever|my comfort food|my weakness|my favourite thing in the world to eat]",
        "if I could only eat one thing, it'd be {v}",
        "I never get tired of {v}",
        "I've loved {v} [since I was a kid|forever|my whole life]",
        "the food I like [best|most] is {v}",
        "I enjoy {v} more than anything",
        "I'm {a} {v} lover",
    ),
}

#: Verb phrases without a subject, for a second fact sharing the first one's "I" ("I live in Rome and work as a
#: nurse").
VPS: dict[str, tuple[str, ...]] = {
    "name": ("go by {v}", "am called {v}"),
    "friend": ("have a best friend called {v}", "am best friends with {v}"),
    "city": (
        "[currently|now] live in {v}",
        "live over in {v}",
        "grew up in {v}",
        "moved to {v}[ recently| last year|]",
        "call {v} home",
        "come from {v}",
    ),
    "pet": (
        "have {ka} {kind} [called|named] {v}",
        "own {ka} {kind} named {v}",
        "live with {ka} {kind} called {v}",
    ),
    "colour": ("love the {colour} {v}", "like {v} best of all the [colours|colors]"),
    "age": ("just turned {v}", "turned {v} [this year|recently]"),
    "job": ("work as {a} {v}", "make a living as {a} {v}", "earn my living as {a} {v}", "do {v} work"),
    "food": (
        "love {v}",
        "could eat {v} every day",
        "adore {v}",
        "am obsessed with {v}",
        "eat {v} whenever I can",
    ),
}

#: Verbless fragments: a participial or prepositional phrase, "value + descriptor", a label ("age: {v}"). Alone
#: they are short answers to a question nobody asked; after a clause they are an apposition or a tail.
FRAGMENTS: dict[str, tuple[str, ...]] = {
    "name": ("name: {v}", "{v} is the name"),
    "friend": (
        "best friends with {v}",
        "with {v} as my best friend",
        "[best friend|bff|bestie]: {v}",
        "{v}'s best friend",
        "best friend of {v}",
    ),
    "city": (
        "[living|based|settled|staying] in {v}",
        "originally from {v}",
        "[born and raised|raised] in {v}",
        "{v} born and raised",
        "{v}-based",
        "{v} resident",
        "[city|home|location|hometown]: {v}",
        "calling {v} home",
        "now in {v}",
    ),
    "pet": (
        "[owner|proud owner] of {ka} {kind} [called|named] {v}",
        "with {ka} {kind} [named|called] {v}",
        "{kind} [owner|parent] - {pr} name's {v}",
        "{ka} {kind} called {v} at home",
        "{kind}: {v}",
    ),
    "colour": (
        "[a fan of|into|loving|crazy about] the {colour} {v}",
        "{fav} {colour}: {v}",
        "{v} as my {fav} {colour}",
        "[colour|color]-wise {v}",
    ),
    "age": ("{v}", "aged {v}", "{v} years old", "{v} y/o", "{v} this year", "age {v}", "just turned {v}"),
    "job": (
        "{a} {v}",
        "[working|employed] as {a} {v}",
        "{a} {v} by profession",
        "{v} by [profession|trade]",
        "[job|occupation|work]: {v}",
        "{a} {v} for a living",
        "doing {v} work",
    ),
    "food": (
        "[crazy about|obsessed with|a huge fan of|into|loving] {v}",
        "{a} {v} lover",
        "{fav} food: {v}",
        "{v} addict",
        "{v} as my {fav} food",
    ),
}

#: A value answering a question nobody asked: "in case you wondered" + an embedded question ("where I live") + this.
ANSWERED_LEADS = (
    "in case you're wondering",
    "if you're wondering",
    "in case you wanted to know",
    "not that you asked, but",
    "since you'll ask,",
    "you might want to know",
    "for your info,",
)
ANSWERED_VALUES: dict[str, tuple[str, ...]] = {
    "name": ("it's {v}", "{v}"),
    "friend": ("it's {v}", "{v}"),
    "city": ("it's {v}", "{v}"),
    "pet": ("it's {v}", "{v}"),
    "colour": ("it's {v}", "{v}"),
    "age": ("I'm {v}", "{v}"),
    "job": ("I'm {a} {v}", "{a} {v}"),
    "food": ("it's {v}", "{v}"),
}

# --- around a fact ----------------------------------------------------------------------------------------------

#: Words that start a message before a fact ("oh, I live in Rome"), hedges and discourse markers included.
OPENERS = (
    "oh, ",
    "so ",
    "so, ",
    "well, ",
    "btw ",
    "by the way, ",
    "fyi ",
    "just so you know, ",
    "oh and ",
    "also, ",
    "and ",
    "ok so ",
    "okay, ",
    "um, ",
    "uh ",
    "quick thing: ",
    "for the record, ",
    "let me tell you, ",
    "fun fact: ",
    "anyway, ",
    "anyways ",
    "so yeah, ",
    "oh yeah, ",
    "right, ",
    "alright, ",
    "hmm, ",
    "I mean, ",
    "random fact: ",
    "about me: ",
    "a bit about me: ",
    "first things first, ",
)
#: Hedges before a fact (not before a name: "I guess my name is" is no way to give one).
HEDGES = (
    "honestly, ",
    "honestly ",
    "I guess ",
    "pretty much ",
    "basically ",
    "tbh ",
    "to be honest, ",
    "ngl ",
    "I'd say ",
    "I think ",
    "well, technically ",
    "if I'm honest, ",
)
CLOSERS = (
    " btw",
    " by the way",
    " :)",
    " haha",
    ", just so you know",
    " lol",
    " fyi",
    " if you care",
    " xD",
    " :D",
    " ;)",
    " hehe",
    " for the record",
    ", if that matters",
    ", in case you wondered",
    " if you must know",
    ", remember that",
    ", fun fact",
    ", not that it matters",
    " :P",
)

#: Greetings that open a message carrying a fact ("Hi! My name is Oscar.").
GREETING_PREFIXES = (
    "Hi!",
    "Hi,",
    "Hi",
    "Hello!",
    "Hello,",
    "Hey,",
    "Hey!",
    "Hey",
    "Hi there!",
    "Hi there,",
    "Hey there!",
    "Good morning!",
    "Good morning,",
    "Good afternoon!",
    "Good evening,",
    "Morning!",
    "Hiya,",
    "Howdy!",
    "Hello there!",
    "hii",
    "heyy",
    "Hey you!",
    "Greetings,",
    "Hi hi!",
    "Hello again!",
    "Hey, hi!",
    "Yo,",
    "Yo!",
    "Evening!",
    "Good evening!",
    "Heyyy",
    "Hiii!",
    "Hey hey!",
    "Hello hello,",
    "Sup,",
    "Hi :)",
    "Hello :)",
    "Hey o/",
    "Hi, hope you're well.",
    "Hey, how's it going?",
    "Hi, how are you?",
    "Hello, nice to meet you!",
    "Hi, first time here.",
)

# --- two facts in one message -------------------------------------------------------------------------------------

#: Connectors between two fact clauses ("I'm Oscar and I live in Lisbon").
JOINERS = (
    " and ",
    ", and ",
    ", ",
    ". ",
    "; ",
    " & ",
    ", also ",
    " and also ",
    ". Oh and ",
    ", plus ",
    " - ",
    "! ",
)
#: Before a subjectless verb phrase ("I live in Rome" + " and " + "work as a nurse").
VP_JOINERS = (" and ", ", and ", " & ", " and I ", ", and also ", " and also ", " but ")
#: Before a fragment ("I'm Ann" + ", " + "a nurse"; "I work as a nurse" + " - " + "living in Rome").
FRAGMENT_JOINERS = (", ", " - ", ", and ", " and ", " & ", "... ", ". ", " / ", ", also ")


def _macros(group: dict[str, tuple[str, ...]]) -> None:
    """Writes the shared alternations ({fav}, {colour}) into the templates, in place."""
    for key, ts in group.items():
        fav = _FAV_COLOUR if key == "colour" else _FAV
        group[key] = tuple(t.replace("{fav}", fav).replace("{colour}", _COLOUR) for t in ts)


for _group in (TELLS, VPS, FRAGMENTS):
    _macros(_group)


def texts() -> list[str]:
    """Every phrase of this module (placeholders and alternations unexpanded), for the pool-value test."""
    out = [t for group in (TELLS, VPS, FRAGMENTS, ANSWERED_VALUES) for ts in group.values() for t in ts]
    out += list(ANSWERED_LEADS + OPENERS + HEDGES + CLOSERS + GREETING_PREFIXES + JOINERS + VP_JOINERS)
    return out + list(FRAGMENT_JOINERS) + [_FAV, _COLOUR]
