"""Seeded synthetic multi-turn dialogues for the demo RxT model.

RxT answers each turn on its own; the only link between turns is the Short-Term Memory written
from `[BOS][Q] query [A] answer [EOS]` after each turn. These dialogues make the model need that
memory: the user tells facts (name, city, pet, ...) and asks about them 1..11 turns later, with
small talk in between. Entity values are split into a TRAIN and a HELD-OUT pool (fixed, seed
independent), so evaluation on held-out values measures memory rather than memorised values.

Run `python models/demo/recipe/demo_dialogues.py --n 5 --seed 0` to print samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# --------------------------------------------------------------------------------------------
# Value pools. Pools are pairwise disjoint (case-insensitive) and no value is an English word
# used by a template or by small talk, so "the answer contains the value" is a meaningful check.
# --------------------------------------------------------------------------------------------

NAMES: tuple[str, ...] = tuple(
    """Ann Bob Carl Dana Emma Finn Gina Hugo Iris Jack Kate Leo Mia Nina Omar Paul Rosa Sam Tara
    Umar Vera Walt Xena Yuri Zoe Adam Beth Cole Dora Eric Fay Glen Hana Ivan Jane Karl Lena Nora
    Otto Petra Quinn Ruth Seth Tina Uma Vito Wendy Yara Zack Alice Boris Clara David Elena Felix
    Greta Henry Ida Jonas Kira Lars Maria Noah Olga Pablo Rita Simon Theo Ulla Victor Wanda Yusuf
    Zara Amir Bianca Chloe Diego Emil Frida Gustav Hilda Igor Julia Kevin Lucy Nadia Oscar Pia Raj
    Sara Tom Ugo Vlad Yasmin Zeno Aisha Carmen Esther Fiona George Helga Ines Jorge Kofi Lola Marek
    Nils Olivia Priya Rafael Sven Tomas Vivian""".split()
)
CITIES: tuple[str, ...] = tuple(
    """Paris Rome Oslo Lima Cairo Tokyo Berlin Madrid Lisbon Vienna Prague Dublin Athens Warsaw
    Krakow Sydney Toronto Boston Denver Chicago Seattle Miami Houston Atlanta Portland Nairobi
    Lagos Accra Dakar Tunis Rabat Delhi Mumbai Dhaka Karachi Lahore Seoul Busan Osaka Kyoto Beijing
    Shanghai Hanoi Manila Jakarta Bangkok Taipei Santiago Bogota Quito Caracas Havana Montreal
    Vancouver Calgary Ottawa Helsinki Stockholm Copenhagen Bergen Munich Hamburg Cologne Zurich
    Geneva Milan Naples Turin Venice Seville Valencia Porto Brussels Antwerp Amsterdam Rotterdam
    Budapest Bucharest Belgrade Zagreb Riga Tallinn Vilnius Istanbul Ankara Tehran Dubai Doha Perth
    Brisbane Auckland Wellington""".split()
)
PET_NAMES: tuple[str, ...] = tuple(
    """Rex Max Bella Luna Coco Bingo Buddy Charlie Daisy Fluffy Oreo Rocky Shadow Simba Snowy Socks
    Spike Tiger Toby Whiskers Ziggy Biscuit Bubbles Buster Dexter Duke Goldie Gizmo Jasper Juno
    Marley Misty Nala Nemo Ollie Patch Peanut Pickles Pixie Pogo Rusty Sasha Scout Skippy Sparky
    Teddy Thor Tilly Winnie Yoshi Zeus Benji Bolt Fido Lassie Pongo Rufus Sammy Trixie Wally Zorro
    Nibbles Sprinkles Dobby Frodo Mochi""".split()
)
PET_KINDS: tuple[str, ...] = tuple(
    "dog cat parrot rabbit hamster turtle goldfish horse ferret lizard pony snake canary gerbil "
    "hedgehog tortoise".split()
)
COLOURS: tuple[str, ...] = tuple(
    "red blue green yellow orange purple pink black white grey brown teal gold silver violet navy "
    "beige maroon turquoise lilac".split()
)
FOODS: tuple[str, ...] = tuple(
    """pizza pasta sushi soup rice tacos curry salad noodles pancakes burgers dumplings lasagna
    risotto paella ramen falafel hummus steak chili omelettes bagels cheese chocolate porridge
    kebab burritos couscous goulash pierogi gnocchi tofu quiche""".split()
)
JOBS: tuple[str, ...] = tuple(
    """teacher nurse doctor baker pilot farmer chef painter plumber dentist lawyer writer singer
    dancer driver builder cashier gardener tailor barber banker carpenter electrician engineer
    architect actor editor artist pharmacist librarian mechanic programmer journalist photographer
    florist butcher waiter firefighter surgeon translator designer scientist""".split()
)
# Ages 21..89: disjoint from small-talk arithmetic, whose numbers stay within 0..20.
AGES: tuple[str, ...] = tuple(str(a) for a in range(21, 90))

POOLS: dict[str, tuple[str, ...]] = {
    "names": NAMES,
    "cities": CITIES,
    "pet_names": PET_NAMES,
    "pet_kinds": PET_KINDS,
    "colours": COLOURS,
    "foods": FOODS,
    "jobs": JOBS,
    "ages": AGES,
}

#: Fraction of each pool held out from training (never appears in a train-split dialogue).
HELDOUT_FRACTION = 0.2
SPLITS = ("train", "heldout")

#: Facts the user can tell. `pet` tells two facts at once: the pet's name and its kind.
FACT_POOL: dict[str, str] = {
    "name": "names",
    "friend": "names",
    "city": "cities",
    "pet": "pet_names",
    "colour": "colours",
    "age": "ages",
    "job": "jobs",
    "food": "foods",
}
#: Facts that can be asked about (`pet_kind` is told by the `pet` turn).
ASK_KEYS: tuple[str, ...] = (*FACT_POOL, "pet_kind")
#: Facts the user may change later in a conversation ("Actually, I moved to Rome.").
UPDATABLE: tuple[str, ...] = ("city", "colour", "food", "job")

#: The fixed reply to a question about a fact that was never told.
UNKNOWN_ANSWER = "I don't know yet, you haven't told me."

# Turn kinds.
TELL, UPDATE, ASK, ASK_UNKNOWN, SMALLTALK = "tell", "update", "ask", "ask_unknown", "smalltalk"
KINDS = (TELL, UPDATE, ASK, ASK_UNKNOWN, SMALLTALK)


@dataclass(frozen=True)
class Turn:
    """One query/answer interaction.

    `fact_key` names the fact a tell/update/ask turn is about; `asked_after` is, for an `ask` turn,
    how many turns back the fact's current value was told (1 = the previous turn); `value` is the
    fact value the turn states or asks for (None for small talk and unknown-fact questions).
    """

    query: str
    answer: str
    kind: str
    fact_key: str | None = None
    asked_after: int | None = None
    value: str | None = None


Dialogue = list[Turn]


@dataclass(frozen=True)
class Probe:
    """An evaluation conversation: `turns[:-1]` are fed as history, `turns[-1].query` is asked.

    `expected` is the fact value; with `told=True` a model recalls correctly when its answer
    contains it (see `contains_value`). With `told=False` the fact was never told (turn 0 is small
    talk), `turns[-1].answer` is `UNKNOWN_ANSWER`, and `expected` is the value of the paired told
    probe: a model can only hit it by chance.
    """

    turns: list[Turn]
    fact_key: str
    delay: int
    expected: str
    told: bool


def article(word: str) -> str:
    """'a' or 'an' for a following word (all pool words are regular in this respect)."""
    return "an" if word[0].lower() in "aeiou" else "a"


def contains_value(text: str, value: str) -> bool:
    """Whether `value` occurs in `text` as a whole word, ignoring case."""
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, flags=re.IGNORECASE) is not None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@cache
def pool_values(pool: str, split: str) -> tuple[str, ...]:
    """The values of `pool` in `split`; the split is fixed (independent of any generation seed)."""
    _check_split(split)
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {sorted(POOLS)}, got {pool!r}")
    values = POOLS[pool]
    order = sorted(values)
    random.Random(f"rxt-demo-split:{pool}").shuffle(order)
    n_held = max(1, round(HELDOUT_FRACTION * len(values)))
    held = set(order[:n_held])
    return tuple(v for v in values if (v in held) == (split == "heldout"))


# --------------------------------------------------------------------------------------------
# Templates. Placeholders: {v} value, {a} its article, {kind} pet kind, {ka} the kind's article.
# Lower-case values (colours, foods, jobs, kinds) never start a sentence, so their spelling in an
# answer is exactly the spelling the user typed.
# --------------------------------------------------------------------------------------------

TELL_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "name": (
        ("I'm {v}.", "My name is {v}.", "Call me {v}, by the way.", "Hi, I'm {v}!", "You can call me {v}."),
        ("Nice to meet you, {v}!", "Hello, {v}!", "Got it, {v}.", "Hi {v}, nice to meet you!"),
    ),
    "friend": (
        ("My best friend is {v}.", "{v} is my best friend.", "My best friend is called {v}."),
        (
            "{v} sounds like a good friend!",
            "Nice, say hi to {v} from me.",
            "Good friends are great, {v} too.",
        ),
    ),
    "city": (
        ("I live in {v}.", "I'm from {v}.", "My home is in {v}.", "I moved to {v} last year."),
        ("{v} sounds like a great place!", "Oh, {v}! Nice.", "Got it, you live in {v}."),
    ),
    "pet": (
        ("I have {ka} {kind} called {v}.", "My {kind} is named {v}.", "My {kind}'s name is {v}."),
        (
            "{v} is a lovely name for {ka} {kind}!",
            "Aw, say hi to {v}!",
            "{ka_cap} {kind} named {v}, how nice!",
        ),
    ),
    "colour": (
        ("My favourite colour is {v}.", "I really like the colour {v}.", "I love the colour {v}."),
        ("Nice, {v} is a lovely colour.", "Good choice, {v} is pretty.", "Noted: you like {v}."),
    ),
    "age": (
        ("I'm {v} years old.", "I am {v} years old.", "I just turned {v}."),
        ("{v} is a great age!", "Happy to know you're {v}.", "Got it, you are {v}."),
    ),
    "job": (
        ("I work as {a} {v}.", "I'm {a} {v}.", "I'm {a} {v} by trade."),
        ("Being {a} {v} sounds interesting!", "Oh, you're {a} {v}! Cool.", "Nice, {a} {v}."),
    ),
    "food": (
        ("My favourite food is {v}.", "I love eating {v}.", "I could eat {v} every day."),
        ("Yum, {v}!", "Good taste, I like {v} too.", "Mmm, {v} is a fine choice."),
    ),
}

UPDATE_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "city": (
        ("Actually, I just moved to {v}.", "News: I live in {v} now."),
        ("Oh, so now you live in {v}.", "Got it, you live in {v} now."),
    ),
    "colour": (
        ("Actually, my favourite colour is {v} now.", "I changed my mind, I like {v} best now."),
        ("Okay, {v} it is.", "Noted, your favourite colour is {v} now."),
    ),
    "food": (
        ("These days my favourite food is {v}.", "Actually, I prefer {v} now."),
        ("Noted, {v} it is!", "Okay, your favourite food is {v} now."),
    ),
    "job": (
        ("I changed jobs, now I'm {a} {v}.", "I just started working as {a} {v}."),
        ("Congrats on the new job as {a} {v}!", "Good luck as {a} {v}!"),
    ),
}

ASK_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "name": (
        ("What is my name?", "What's my name?", "Do you remember my name?", "Who am I?"),
        ("Your name is {v}.", "You are {v}."),
    ),
    "friend": (
        ("What's my best friend's name?", "Who is my best friend?", "Do you remember my best friend?"),
        ("Your best friend is {v}.",),
    ),
    "city": (
        ("Where do I live?", "Which city do I live in?", "Do you remember where I live?"),
        ("You live in {v}.",),
    ),
    "pet": (
        ("What's my {kind} called?", "What is my {kind}'s name?", "Do you remember my {kind}'s name?"),
        ("Your {kind} is called {v}.",),
    ),
    "pet_kind": (
        ("What kind of pet do I have?", "What pet do I have?"),
        ("You have {a} {v}.",),
    ),
    "colour": (
        ("What's my favourite colour?", "Which colour do I like best?"),
        ("Your favourite colour is {v}.",),
    ),
    "age": (
        ("How old am I?", "Do you remember my age?"),
        ("You are {v} years old.",),
    ),
    "job": (
        ("What do I do for a living?", "What is my job?", "What's my job?"),
        ("You are {a} {v}.", "You work as {a} {v}."),
    ),
    "food": (
        ("What's my favourite food?", "What do I love to eat?"),
        ("Your favourite food is {v}.", "You love {v}."),
    ),
}

_GREETINGS = (
    ("Hi!", "Hello! How can I help?"),
    ("Hello there.", "Hi! Nice to talk to you."),
    ("Good morning!", "Good morning to you too!"),
    ("How are you?", "I'm fine, thanks for asking!"),
    ("How is it going?", "Pretty well, thank you."),
    ("Thanks!", "You're welcome!"),
    ("Can you help me?", "Of course, what do you need?"),
    ("Are you a robot?", "I'm a small language model."),
    ("Good night!", "Good night, sleep well!"),
)
_WEATHER = (
    ("What's the weather like?", "I can't look outside, but I hope it's nice."),
    ("Will it rain today?", "Maybe, so take an umbrella just in case."),
    ("Is it cold outside?", "Could be, a warm jacket never hurts."),
    ("Do you like snow?", "Snow is pretty, but I never feel cold."),
    ("It's so hot today.", "Drink plenty of water!"),
    ("It's raining again.", "A good day to stay inside with a book."),
)
_JOKES = (
    "Why did the scarecrow win an award? He was outstanding in his field.",
    "What do you call a fake noodle? An impasta.",
    "Why don't eggs tell jokes? They would crack up.",
    "What did the ocean say to the beach? Nothing, it just waved.",
    "Why did the bicycle fall over? It was two tired.",
)
_JOKE_QUERIES = ("Tell me a joke.", "Do you know a joke?", "Make me laugh.")
_TRIVIA = (
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("How many days are in a week?", "A week has seven days."),
    ("What comes after Monday?", "Tuesday comes after Monday."),
    ("What comes after Friday?", "Saturday comes after Friday."),
    ("Count to three.", "One, two, three."),
    ("What do bees make?", "Bees make honey."),
    ("How many hours are in a day?", "A day has twenty four hours."),
    ("Which is bigger, the sun or the moon?", "The sun is much bigger."),
)
_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 10), rng.randint(0, 10)
    if rng.random() < 0.5:
        q = rng.choice(("What is {a} plus {b}?", "How much is {a} plus {b}?", "Add {a} and {b}."))
        return q.format(a=a, b=b), f"{a} plus {b} is {a + b}."
    a, b = max(a, b), min(a, b)
    q = rng.choice(("What is {a} minus {b}?", "How much is {a} minus {b}?", "Take {b} from {a}."))
    return q.format(a=a, b=b), f"{a} minus {b} is {a - b}."


def _smalltalk_pair(rng: random.Random) -> tuple[str, str]:
    r = rng.random()
    if r < 0.25:
        return _arithmetic(rng)
    if r < 0.45:
        return rng.choice(_GREETINGS)
    if r < 0.65:
        return rng.choice(_WEATHER)
    if r < 0.75:
        return rng.choice(_JOKE_QUERIES), rng.choice(_JOKES)
    return rng.choice(_TRIVIA)


def _smalltalk(rng: random.Random) -> Turn:
    q, a = _smalltalk_pair(rng)
    return Turn(q, a, SMALLTALK)


def _fill(template: str, value: str, kind: str | None) -> str:
    ka = article(kind) if kind else ""
    a = article(value) if value else ""
    return template.format(v=value, a=a, kind=kind or "", ka=ka, ka_cap=ka.capitalize())


def _tell(key: str, facts: dict[str, str], rng: random.Random) -> Turn:
    queries, answers = TELL_TEMPLATES[key]
    v, kind = facts[key], facts.get("pet_kind")
    return Turn(_fill(rng.choice(queries), v, kind), _fill(rng.choice(answers), v, kind), TELL, key, None, v)


def _update(key: str, value: str, rng: random.Random) -> Turn:
    queries, answers = UPDATE_TEMPLATES[key]
    return Turn(
        _fill(rng.choice(queries), value, None),
        _fill(rng.choice(answers), value, None),
        UPDATE,
        key,
        None,
        value,
    )


def _ask(key: str, facts: dict[str, str], asked_after: int, rng: random.Random) -> Turn:
    queries, answers = ASK_TEMPLATES[key]
    v, kind = facts[key], facts.get("pet_kind")
    return Turn(
        _fill(rng.choice(queries), v, kind), _fill(rng.choice(answers), v, kind), ASK, key, asked_after, v
    )


def _ask_unknown(key: str, kind: str, rng: random.Random) -> Turn:
    """A question about a fact never told; `kind` fills "What's my {kind} called?"."""
    query = _fill(rng.choice(ASK_TEMPLATES[key][0]), "", kind)
    return Turn(query, UNKNOWN_ANSWER, ASK_UNKNOWN, key, None, None)


def _draw_facts(rng: random.Random, split: str) -> dict[str, str]:
    """One value per fact for a conversation; `name` and `friend` differ."""
    facts = {key: rng.choice(pool_values(pool, split)) for key, pool in FACT_POOL.items()}
    while facts["friend"] == facts["name"]:
        facts["friend"] = rng.choice(pool_values("names", split))
    facts["pet_kind"] = rng.choice(pool_values("pet_kinds", split))
    return facts


def _delay_weight(d: int) -> float:
    """Delays 1, 2, 4, 8 (the evaluated ones) are favoured; the rest keep the model general."""
    if d in (1, 2, 4):
        return 4.0
    if d == 8:
        return 6.0
    return 2.0 if d < 8 else 1.0


def _plan_dialogue(rng: random.Random, n_turns: int) -> list[tuple[str, ...] | None]:
    """Slot plan: ('tell', key) / ('ask', key, ask_key) / ('update', key) / None (filled later)."""
    slots: list[tuple[str, ...] | None] = [None] * n_turns
    keys = list(FACT_POOL)
    rng.shuffle(keys)
    n_facts = rng.randint(1, max(1, min(4, n_turns // 2)))
    delays = list(range(1, n_turns))
    weights = [_delay_weight(d) for d in delays]
    for key in keys[:n_facts]:
        for _ in range(8):
            d = rng.choices(delays, weights)[0]
            p = rng.randint(0, n_turns - 1 - d)
            if slots[p] is None and slots[p + d] is None:
                break
        else:
            continue
        slots[p] = (TELL, key)
        slots[p + d] = (ASK, key, _ask_key(key, rng))
        free_after = [i for i in range(p + 1, n_turns) if slots[i] is None]
        if key in UPDATABLE and len(free_after) >= 2 and rng.random() < 0.2:
            q = rng.choice(free_after[:-1])
            later = [i for i in free_after if i > q]
            slots[q] = (UPDATE, key)
            slots[rng.choice(later)] = (ASK, key, key)
        elif free_after and rng.random() < 0.3:
            slots[rng.choice(free_after)] = (ASK, key, _ask_key(key, rng))
    return slots


def _ask_key(key: str, rng: random.Random) -> str:
    return "pet_kind" if key == "pet" and rng.random() < 0.3 else key


def _render_dialogue(rng: random.Random, split: str, max_turns: int) -> Dialogue:
    # The longer of two draws: long conversations are where long recall delays fit.
    low = min(4, max_turns)
    n_turns = max(rng.randint(low, max_turns), rng.randint(low, max_turns))
    slots = _plan_dialogue(rng, n_turns)
    facts = _draw_facts(rng, split)
    told_keys = {s[1] for s in slots if s is not None}
    untold = [k for k in ASK_KEYS if k not in told_keys and not (k == "pet_kind" and "pet" in told_keys)]
    told_at: dict[str, int] = {}
    turns: Dialogue = []
    for i, slot in enumerate(slots):
        if slot is None:
            if untold and rng.random() < 0.15:
                turns.append(
                    _ask_unknown(rng.choice(untold), rng.choice(pool_values("pet_kinds", split)), rng)
                )
            else:
                turns.append(_smalltalk(rng))
        elif slot[0] == TELL:
            told_at[slot[1]] = i
            turns.append(_tell(slot[1], facts, rng))
        elif slot[0] == UPDATE:
            key = slot[1]
            choices = [v for v in pool_values(FACT_POOL[key], split) if v != facts[key]]
            facts[key] = rng.choice(choices)
            told_at[key] = i
            turns.append(_update(key, facts[key], rng))
        else:
            key, ask_key = slot[1], slot[2]
            turns.append(_ask(ask_key, facts, i - told_at[key], rng))
    return turns


def _check_positive(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def generate_dialogues(n: int, seed: int, split: str = "train", max_turns: int = 12) -> list[Dialogue]:
    """`n` conversations of 4..max_turns turns (skewed long) with values from `split` only."""
    _check_split(split)
    _check_positive("n", n, 0)
    _check_positive("max_turns", max_turns, 2)
    rng = random.Random(f"rxt-demo-dialogues:{split}:{seed}")
    return [_render_dialogue(rng, split, max_turns) for _ in range(n)]


def _probes(
    n: int,
    seed: int,
    delays: Sequence[int],
    split: str,
    fact_keys: Sequence[str] | None,
    told: bool,
    mixed: bool,
) -> list[Probe]:
    _check_split(split)
    _check_positive("n", n, 0)
    keys = tuple(fact_keys) if fact_keys is not None else ASK_KEYS
    bad = [k for k in keys if k not in ASK_KEYS]
    if bad or not keys:
        raise ValueError(f"fact_keys must be a non-empty subset of {ASK_KEYS}, got {list(keys)!r}")
    for d in delays:
        _check_positive("delays[]", d, 1)
    # Told and no-fact probes consume the random stream identically: same seed, same conversations.
    rng = random.Random(f"rxt-demo-probes:{split}:{seed}")
    probes = []
    for delay in delays:
        for i in range(n):
            ask_key = keys[i % len(keys)]
            key = "pet" if ask_key == "pet_kind" else ask_key
            facts = _draw_facts(rng, split)
            tell_turn, filler = _tell(key, facts, rng), _smalltalk(rng)
            others = [k for k in FACT_POOL if k not in (key, "pet")]
            rng.shuffle(others)
            history = [tell_turn if told else filler]
            for _ in range(delay - 1):
                turn = _smalltalk(rng)
                if mixed and others and rng.random() < 0.5:
                    turn = _tell(others.pop(), facts, rng)
                history.append(turn)
            question = _ask(ask_key, facts, delay, rng)
            if not told:
                question = Turn(question.query, UNKNOWN_ANSWER, ASK_UNKNOWN, ask_key, None, None)
            probes.append(Probe(history + [question], ask_key, delay, facts[ask_key], told))
    return probes


def recall_probes(
    n: int,
    seed: int,
    delays: Sequence[int] = (1, 2, 4, 8),
    split: str = "heldout",
    fact_keys: Sequence[str] | None = None,
    mixed: bool = False,
) -> list[Probe]:
    """`n` probes per delay: fact at turn 0, `delay - 1` distractors, then the question.

    Fact keys cycle through `fact_keys` (default: all of `ASK_KEYS`). Distractors are small talk;
    with `mixed=True` about half of them tell other facts instead (interference).
    """
    return _probes(n, seed, delays, split, fact_keys, told=True, mixed=mixed)


def no_fact_probes(
    n: int,
    seed: int,
    delays: Sequence[int] = (1, 2, 4, 8),
    split: str = "heldout",
    fact_keys: Sequence[str] | None = None,
    mixed: bool = False,
) -> list[Probe]:
    """The `recall_probes` of the same arguments with turn 0 replaced by small talk.

    The fact is never told, so a model that answers from memory hits `expected` only by chance
    (about 1 / pool size); the correct answer is `UNKNOWN_ANSWER`.
    """
    return _probes(n, seed, delays, split, fact_keys, told=False, mixed=mixed)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def format_dialogue(turns: Sequence[Turn]) -> str:
    """Human-readable rendering used by the CLI."""
    lines = []
    for i, t in enumerate(turns):
        tag = t.kind + (f":{t.fact_key}" if t.fact_key else "")
        if t.asked_after is not None:
            tag += f" (told {t.asked_after} back)"
        lines.append(f"  [{i:2d}] {tag}\n       Q: {t.query}\n       A: {t.answer}")
    return "\n".join(lines)


def _write_jsonl(path: Path, dialogues: list[Dialogue]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for d in dialogues:
            f.write(json.dumps([dataclasses.asdict(t) for t in d]) + "\n")


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5, help="dialogues (or probes per delay) to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--max-turns", type=int, default=12)
    p.add_argument("--probes", action="store_true", help="print recall probes instead of dialogues")
    p.add_argument("--delays", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--jsonl", type=Path, help="write the dialogues as JSON lines instead of printing")
    args = p.parse_args(argv)
    if args.probes:
        for i, pr in enumerate(recall_probes(args.n, args.seed, args.delays, args.split)):
            out(f"=== probe {i}: {pr.fact_key}, delay {pr.delay}, expected {pr.expected!r}")
            out(format_dialogue(pr.turns))
        return 0
    start = time.perf_counter()
    dialogues = generate_dialogues(args.n, args.seed, args.split, args.max_turns)
    elapsed = time.perf_counter() - start
    if args.jsonl:
        _write_jsonl(args.jsonl, dialogues)
        out(f"wrote {len(dialogues)} dialogues to {args.jsonl} ({elapsed:.2f} s to generate)")
        return 0
    for i, d in enumerate(dialogues):
        out(f"=== dialogue {i} ({len(d)} turns)")
        out(format_dialogue(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
