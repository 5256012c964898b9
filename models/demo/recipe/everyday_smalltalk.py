"""Small talk of the everyday-typing generator (`demo_everyday.py`): data only.

Issue 19: greetings and small talk in many forms get small-talk answers, never a stored-fact sentence. Besides the
whole pairs of stage 9 (`SMALLTALK`), small talk comes in families: a grammar of queries (template syntax as in
`everyday_phrases.py`) and the answers that fit any of them (time-of-day greetings, how-are-yous, slang, reactions
such as "haha" or "cool cool", emoticons, moods, what the user is doing, questions to the bot). Many look like a
fact's frame on purpose ("I'm tired", "I'm at work", "it's raining", "what's your name") so the model learns the
frame alone is not a fact. Written from general chat English, never from `everyday_eval.py`.
"""

from __future__ import annotations

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

_HELLO = (
    "Hello! How can I help?",
    "Hi there! How can I help?",
    "Hey! What's up?",
    "Hi! Nice to talk to you.",
)
_FINE = (
    "I'm fine, thanks for asking!",
    "I'm doing well, thank you!",
    "Pretty well, thank you.",
    "All good here!",
)
_GLAD = ("Glad to hear it!", "That's great to hear!", "Nice!")
_LAUGH = ("Glad that made you laugh!", "Haha, glad you liked it!")
_OK = ("Okay!", "Alright!", "Great!", "Sounds good!")
_WELCOME = ("You're welcome!", "Happy to help!", "Anytime!", "No problem!")
_BYE = ("Bye, talk to you soon!", "See you!", "Take care!", "See you later!")
_SORRY = ("Sorry to hear that.", "I'm sorry, I hope things get better.", "That sounds hard, hang in there.")
_BOT = ("I'm a small language model.", "Just a small language model, here to chat.")
_NONE = (
    "I'm a small language model, so I don't have one.",
    "I don't have one, I'm just a small language model.",
)
_NICE = ("Sounds nice!", "Enjoy!", "Sounds good to me!")
_HAPPY_EMO = ("", "", "", " :)", " :D", " xD", " ;)", " ^^", " <3", " haha", " lol", "!", "!!")
_SAD_EMO = ("", "", "", " :(", " :/", " ugh", "...")

#: (query grammars, answers, endings): any query of a family gets any of its answers. No bare name-like word.
FAMILIES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        (
            "[hi|hey|hello|hii|hiii|heyy|heyyy|helloo|hallo|hola|ello|howdy][ bot| you| everyone|]",
            "[hi|hello|yo] [hey|hello]",
            "wassup",
            "o/",
            "hey, it's me again",
            "hello? anyone there",
            "knock knock",
        ),
        _HELLO,
        _HAPPY_EMO,
    ),
    (
        ("[good morning|morning|mornin|gm|top of the morning|good morning to you]", "rise and shine"),
        ("Good morning to you too!", "Morning! Hope you slept well.", "Good morning! How can I help?"),
        _HAPPY_EMO,
    ),
    (
        ("[good afternoon|afternoon][ to you| all|]",),
        ("Good afternoon! How can I help?", "Good afternoon to you too!"),
        _HAPPY_EMO,
    ),
    (
        ("good [evening|eve][ to you| all|]", "evening [all|everyone]"),
        ("Good evening! How are you?", "Good evening to you too!"),
        _HAPPY_EMO,
    ),
    (
        ("[good night|night|nighty night|night night|gn|sleep well|going to bed now|off to bed]",),
        ("Good night, sleep well!", "Sleep tight!", "Good night!"),
        _HAPPY_EMO,
    ),
    (
        (
            "[hi, |hey, |hello, |]"
            "[how are you|how are u|how's it going|how is it going|"
            "how you doing|how's life|how's everything|you doing ok|you alright|you good|all good]"
            "[ today| tonight| these days|]",
            "how's your [day|day going|evening|morning|week|weekend]",
            "how was your [day|weekend|night]",
            "and you",
            "what about you",
            "hbu",
            "you?",
        ),
        _FINE,
        _HAPPY_EMO,
    ),
    (
        ("[what's up|whats up|what's going on|what are you up to|what you up to|whatcha doing]",),
        ("Not much, just here to chat.", "Just waiting to chat with you!", "Nothing much, how about you?"),
        _HAPPY_EMO,
    ),
    (
        (
            "I'm [good|fine|okay|ok|great|alright|doing well|doing good|pretty good|not bad|all good|well]"
            "[, thanks|, thank you|, thx for asking|, you|, and you|]",
            "[not bad|not too bad|can't complain|could be worse|same old|all good|pretty good|good good]",
            "good[ thanks| and you|]",
        ),
        _GLAD,
        _HAPPY_EMO,
    ),
    (
        (
            "I'm [so |really |kinda |super |very |pretty |feeling |]"
            "[tired|exhausted|sleepy|worn out|knackered|drained|beat]"
            "[ today| right now| tonight| lol|]",
            "[so|soo|ugh, so|sooo] tired",
            "feeling [tired|sleepy|exhausted]",
            "I [need|could use] [a nap|some sleep|a break|coffee]",
            "long day",
            "what a [day|week]",
            "I had a [long|rough|busy] [day|week]",
        ),
        ("Sorry to hear that, maybe take a break.", "Sounds like you deserve some rest.", "Rest if you can!"),
        _SAD_EMO,
    ),
    (
        (
            "I'm [so |really |kinda |a bit |feeling |]"
            "[sad|down|upset|lonely|stressed|anxious|nervous|overwhelmed|worried|frustrated|annoyed|grumpy]"
            "[ today| right now| tonight|]",
            "[today|this week] [sucks|is rough|was awful]",
            "not a great day",
            "I'm not feeling great",
            "bad day",
            "feeling [down|low|meh|off]",
            "[ugh|meh|sigh]",
        ),
        _SORRY + ("Take a deep breath, you've got this.",),
        _SAD_EMO,
    ),
    (
        (
            "I'm [so |really |super |feeling |]"
            "[happy|excited|great|thrilled|pumped|in a good mood|on top of the world|relaxed|chill]"
            "[ today| right now| tonight|]",
            "[today|this week] [is great|was amazing|went well]",
            "feeling [good|great|happy|awesome] today",
            "best day ever",
        ),
        _GLAD,
        _HAPPY_EMO,
    ),
    (
        ("I'm [so |really |kinda |a bit |super |][hungry|starving|peckish]", "[so|soo] hungry", "need food"),
        ("Maybe it's time for a snack!", "Sounds like snack time!"),
        _SAD_EMO,
    ),
    (
        ("I'm [so |really |kinda |a bit |super |]bored", "[so|soo] bored", "[nothing|not much] to do today"),
        ("Want to hear a joke?", "Let's chat then!", "Maybe go for a walk, or read a book."),
        _SAD_EMO,
    ),
    (
        (
            "I'm [so |really |kinda |a bit |][sick|ill|unwell]",
            "I'm [feeling sick|under the weather|not feeling well|coming down with something]",
        ),
        ("I'm sorry, get well soon!", "Take care of yourself!"),
        _SAD_EMO,
    ),
    (
        ("I'm [so |really |kinda |a bit |super |][cold|freezing|hot|sweating]",),
        ("Stay comfortable!", "Maybe grab a drink and take it easy."),
        _SAD_EMO,
    ),
    (
        ("I'm [so |really |super |kinda |][busy|swamped|slammed][ today| this week| right now|]",),
        ("Good luck with everything today!", "Hang in there, you've got this."),
        _SAD_EMO,
    ),
    (
        (
            "I just [got home|woke up|got up|finished work|got back|had lunch|had breakfast|had dinner|"
            "had a shower|got off work|finished my shift|got out of bed|made coffee|went for a run|did the dishes]",
            "I'm [at work|at home|on the bus|on the train|in bed|on my break|on my lunch break|out for a walk|"
            "cooking|watching tv|gaming|studying|working|chilling|relaxing|on my phone|in the kitchen|outside]"
            "[ right now| at the moment| rn|]",
            "[just|] [chilling|relaxing|working|studying] [at home|today|]",
            "back from [work|school|the gym|the shops|a walk]",
            "I'm back",
            "brb",
            "back",
        ),
        _NICE + ("Welcome back!", "Good for you!"),
        _HAPPY_EMO,
    ),
    (
        (
            "[haha|hahaha|hehe|lmao|rofl|xD|XD|:D|:)|;)|^^|lolol|haha nice]",
            "[that's|that is|you're|so] funny",
            "good one",
        ),
        _LAUGH,
        ("",),
    ),
    (
        (
            "[nice|cool|cool cool|neat|sweet|awesome|great|perfect|amazing|love it|wow|oh wow|whoa|omg|no way|"
            "interesting|fair enough|makes sense|true|good to know|gotcha|ah ok|oh ok|ahh|ok|okay|k|kk|okie|"
            "alright|sure|yep|yeah|yes|yup|nope|nah|no|maybe|hmm|hm|uh huh|right|exactly|indeed|agreed|same|"
            "me too|fine|whatever|sounds good|cool thanks|got it|I see|oh I see|noted|okay then]",
        ),
        _OK + ("Glad you think so!", "Indeed!", "Fair enough."),
        _HAPPY_EMO,
    ),
    (
        (
            "[thanks|thank you|thank u|ty|tysm|thanks a lot|thanks so much|many thanks|much appreciated|"
            "appreciate it|thanks a bunch|thank you kindly|thanks again]"
            "[ mate| friend| bot|]",
            "you're [the best|a star|a lifesaver|awesome|great]",
        ),
        _WELCOME,
        _HAPPY_EMO,
    ),
    (
        (
            "[sorry|my bad|oops|whoops|sry|soz|apologies|sorry about that|sorry for that]",
            "I didn't mean that",
            "ignore me",
            "never mind",
            "nvm",
        ),
        ("No worries at all.", "No problem!", "That's okay!"),
        ("", "", " :/", "..."),
    ),
    (
        (
            "[bye|goodbye|bye bye|bye now|see you|see ya|see you later|see you soon|cya|later|laters|"
            "catch you later|talk later|talk to you later|ttyl|gotta go|gtg|got to go|I'm off|I have to go|"
            "I'm heading out|take care|peace|peace out|until next time]",
        ),
        _BYE,
        _HAPPY_EMO,
    ),
    (
        (
            "[what's|what is] your name",
            "do you have a name",
            "who are you",
            "what are you",
            "are you a [bot|robot|person|human|real person|computer|program|machine|chatbot]",
            "are you [real|alive|human|an AI|sentient|a girl or a guy]",
            "what kind of [bot|program] are you",
            "r u a bot",
        ),
        _BOT,
        ("", "", " lol", " :)", " haha"),
    ),
    (
        (
            "what's your [favourite|favorite|fav] [colour|color|food|movie|song|animal|book]",
            "do you have a [favourite|favorite] [colour|food|movie|song]",
        ),
        _NONE,
        ("", "", " lol", " :)"),
    ),
    (
        (
            "[how old are you|where are you from|where do you live|do you have a pet|do you have friends|"
            "what do you do for fun|do you have a job|do you eat|what's your job|are you married]",
        ),
        (
            "I'm just a small language model, so that doesn't apply to me.",
            "Ha, I'm only a small language model.",
        ),
        ("", "", " lol", " :)"),
    ),
    (
        (
            "what can you do",
            "how do you work",
            "can you remember [things|stuff|what I say|what I tell you]",
            "do you remember [stuff|things]",
            "what are you good at",
            "are you smart",
            "can you help me",
            "I need [help|some help]",
            "can I ask you something",
            "can we [talk|chat]",
            "[let's|lets] [chat|talk]",
            "talk to me",
        ),
        (
            "I can chat and remember what you tell me.",
            "Of course, what do you need?",
            "Sure, what's on your mind?",
        ),
        ("", "", " :)", " pls", " please"),
    ),
    (
        (
            "it's [so cold|freezing|so hot|raining|pouring|sunny|snowing|windy|nice out|a lovely day|miserable out|"
            "cloudy|foggy|boiling]"
            "[ today| outside| again|]",
            "[lovely|awful|horrible|great] weather[ today|]",
            "the weather is [nice|awful|great|terrible] today",
        ),
        ("Hope you're staying comfortable!", "Stay safe out there!", "A good day for a cup of tea."),
        _HAPPY_EMO,
    ),
    (
        (
            "it's [friday|monday|the weekend|my day off|late|so late|early|a holiday|my birthday week]"
            "[ today| already| finally|]",
            "[finally|happy] [friday|weekend]",
            "tgif",
            "[what a|such a] [week|day|morning|night]",
        ),
        ("Enjoy it!", "Make the most of it!", "Sounds like a good day to relax."),
        _HAPPY_EMO,
    ),
    (
        (
            "you're [funny|smart|cool|sweet|nice|clever|kind|great|awesome|hilarious]",
            "[good|nice] [job|bot|answer|one]",
            "well done",
            "I like you",
            "you're doing great",
        ),
        ("Thanks, I try!", "Thank you!", "That's kind of you!"),
        _HAPPY_EMO,
    ),
    (
        ("tell me [a fun fact|something fun|something interesting|something]", "[entertain me|surprise me]"),
        (
            "Honey never spoils.",
            "Octopuses have three hearts.",
            "Bananas are berries, but strawberries aren't.",
        ),
        _HAPPY_EMO,
    ),
    (
        ("[what should I|what do you think I should] do today", "any [plans|ideas] for today"),
        ("Maybe go for a walk, or read a book.", "Just chatting with you!"),
        _HAPPY_EMO,
    ),
)


def texts() -> list[str]:
    """Every phrase of this module (unexpanded), for the pool-value test and the trainer's template words."""
    out = [t for pair in SMALLTALK for t in pair]
    for queries, answers, ends in FAMILIES:
        out += list(queries) + list(answers) + list(ends)
    return out
