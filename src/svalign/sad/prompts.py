"""Prompt sets for the SAD stage: IOI prompts from our own templates, plain-text control sentences, and the
repeated-segment sequences of our dynamics series (written by that stage's rule ``dynamics_prompts``, read here as
a list of texts).

IOI ("indirect object identification"): "When Mary and John went to the store, John gave a drink to" → Mary.
The two names appear in the order ABBA (IO first) or BABA (subject first); the subject is repeated before the
final "to", and the model should complete the indirect object (IO). All lists are ours; generation is seeded.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "IOI_TEMPLATES",
    "NAMES",
    "OBJECTS",
    "PLACES",
    "PLAIN_TEXT",
    "PROMPT_SETS",
    "IOIPrompt",
    "ioi_prompts",
    "prompt_set",
]

# {A} is the first-mentioned name of the pair clause, {B} the second; the subject S is repeated after the comma.
IOI_TEMPLATES = (
    "When {A} and {B} went to the {place}, {S} gave a {object} to",
    "When {A} and {B} arrived at the {place}, {S} handed a {object} to",
    "After {A} and {B} walked into the {place}, {S} passed a {object} to",
    "While {A} and {B} were sitting in the {place}, {S} offered a {object} to",
    "Then {A} and {B} had a long talk at the {place}, and {S} gave a {object} to",
    "Yesterday {A} and {B} met at the {place}, where {S} sold a {object} to",
    "Once {A} and {B} got back from the {place}, {S} brought a {object} to",
    "Before {A} and {B} left the {place}, {S} showed a {object} to",
    "Because {A} and {B} were cleaning the {place}, {S} threw a {object} to",
    "Since {A} and {B} were waiting outside the {place}, {S} lent a {object} to",
    "As soon as {A} and {B} reached the {place}, {S} sent a {object} to",
    "Later that day {A} and {B} stopped by the {place}, and {S} mailed a {object} to",
)

NAMES = (
    "Mary",
    "John",
    "Tom",
    "James",
    "Anna",
    "Paul",
    "Lisa",
    "Mark",
    "Sarah",
    "David",
    "Emma",
    "Peter",
    "Laura",
    "Michael",
    "Kate",
    "George",
    "Alice",
    "Daniel",
    "Rachel",
    "Robert",
    "Linda",
    "Steven",
    "Helen",
    "Richard",
    "Susan",
    "Thomas",
    "Karen",
    "Charles",
    "Amy",
    "Kevin",
    "Jane",
    "Brian",
    "Julia",
    "Eric",
    "Grace",
    "Frank",
    "Rose",
    "Henry",
    "Ruth",
    "Jack",
)
PLACES = (
    "store",
    "school",
    "park",
    "hospital",
    "station",
    "restaurant",
    "garden",
    "office",
    "library",
    "market",
    "beach",
    "museum",
    "church",
    "bank",
    "kitchen",
    "house",
)
OBJECTS = (
    "drink",
    "book",
    "ball",
    "letter",
    "ring",
    "bag",
    "gift",
    "key",
    "pen",
    "cake",
    "hat",
    "ticket",
    "phone",
    "card",
    "box",
    "flower",
)


@dataclass(frozen=True)
class IOIPrompt:
    """One IOI prompt: its text, the indirect object and subject names, template index and name order."""

    text: str
    io_name: str
    s_name: str
    template: int
    order: str  # "ABBA" (IO mentioned first) or "BABA" (subject mentioned first)


def ioi_prompts(n: int, seed: int = 0, names: tuple[str, ...] = NAMES) -> list[IOIPrompt]:
    """``n`` IOI prompts, cycling over templates and alternating ABBA/BABA, names/places/objects seeded."""
    if n < 1:
        raise ValueError(f"need at least one IOI prompt, got n={n}")
    if len(names) < 2:
        raise ValueError("IOI prompts need at least two distinct names")
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        template = i % len(IOI_TEMPLATES)
        order = "ABBA" if (i // len(IOI_TEMPLATES)) % 2 == 0 else "BABA"
        io_name, s_name = rng.sample(names, 2)
        first, second = (io_name, s_name) if order == "ABBA" else (s_name, io_name)
        text = IOI_TEMPLATES[template].format(
            A=first, B=second, S=s_name, place=rng.choice(PLACES), object=rng.choice(OBJECTS)
        )
        prompts.append(IOIPrompt(text, io_name, s_name, template, order))
    return prompts


PLAIN_TEXT = (
    "The river ran fast after the storm, carrying branches down toward the old mill.",
    "She kept a small notebook in her coat pocket and wrote down every bird she saw.",
    "Most of the town was asleep when the first train of the morning pulled into the station.",
    "The recipe calls for two cups of flour, a pinch of salt and a little warm water.",
    "After the meeting, the committee agreed to postpone the vote until next month.",
    "A thin layer of frost covered the windows, and the garden looked white and still.",
    "He fixed the bicycle chain with a pair of pliers and some patience.",
    "The museum opened a new wing dedicated to maps drawn by sailors long ago.",
    "Our neighbours planted tomatoes along the fence, and the plants grew taller than the gate.",
    "The library stays open late on Thursdays so that students can study for exams.",
    "Clouds gathered over the hills while the farmers hurried to bring in the hay.",
    "The software update changed the menu layout, which confused many users at first.",
    "At the edge of the forest there was a wooden cabin with a red door.",
    "The orchestra tuned their instruments as the audience slowly found their seats.",
    "A good night of sleep can improve memory, mood and concentration the next day.",
    "The children built a sandcastle with towers, walls and a moat filled with seawater.",
    "Engineers tested the bridge by driving heavy trucks across it for several hours.",
    "The coffee shop on the corner sells fresh bread every morning before seven.",
    "Mountains in the distance turned pink and orange as the sun went down.",
    "The teacher asked the class to read the first chapter before Monday.",
    "Rain tapped against the roof all night, and by morning the streets were flooded.",
    "The company hired three new designers to work on the spring collection.",
    "Bees carried pollen from flower to flower across the meadow behind the school.",
    "He spent the afternoon sorting old photographs into albums by year.",
    "The ferry crossed the bay twice a day, weather permitting.",
    "Several volunteers cleaned the beach and collected bags full of plastic.",
    "A cat slept on the warm stones near the fireplace while the soup simmered.",
    "The city council approved a plan to add more bike lanes downtown.",
    "Her grandmother taught her how to knit scarves during the long winter evenings.",
    "The telescope revealed rings around the planet and a few of its moons.",
    "Fresh snow muffled every sound, and the village seemed to hold its breath.",
    "They rented a small boat and rowed out to the island for a picnic.",
    "The report showed that sales had risen steadily over the last four quarters.",
    "An old clock in the hallway chimed every hour, a little too loudly.",
    "The hikers followed the trail along the ridge until they reached the lake.",
    "A new bakery opened next to the post office, and the line went around the block.",
    "The scientist repeated the experiment to make sure the results were reliable.",
    "Wind turbines turned slowly on the hills above the valley.",
    "He learned to play the guitar by watching videos and practising every evening.",
    "The garden club meets on the first Saturday of each month to swap seeds.",
    "Leaves changed colour early that year, turning the park into a sea of gold.",
    "The airport was crowded with travellers heading home for the holidays.",
    "She painted the kitchen walls a pale yellow that caught the morning light.",
    "The football match was delayed because of heavy fog over the stadium.",
    "Old letters found in the attic told the story of a family that had emigrated.",
    "The market sold apples, pears, honey and cheese from nearby farms.",
    "A lighthouse stood at the end of the pier, its lamp sweeping across the waves.",
    "The students presented their projects to a panel of judges from the university.",
    "He forgot his umbrella on the bus and got soaked on the walk home.",
    "The new law requires all restaurants to list allergens on their menus.",
    "Dolphins followed the ship for a while, leaping through the wake.",
    "The chess club welcomed beginners and offered lessons every Wednesday.",
    "A power cut left the whole street in darkness for about an hour.",
    "The gardener trimmed the hedges into neat shapes before the summer fair.",
    "Her favourite book was a long novel about a family of lighthouse keepers.",
    "The path through the woods was muddy, so they wore their oldest boots.",
    "The bakery ran out of croissants before nine, as it did every Sunday.",
    "A team of divers explored the wreck of a ship that sank a century ago.",
    "The hotel room had a balcony with a view over the harbour.",
    "Traffic slowed to a crawl as the parade moved along the main avenue.",
    "The violinist practised the same passage until every note rang clear.",
    "Farmers hoped for rain after weeks of dry, hot weather.",
    "The kids laughed as the puppy chased its own tail around the yard.",
    "Researchers collected samples of water from twelve lakes in the region.",
    "The old bridge was closed for repairs, so drivers took the long way around.",
    "At dawn the fishing boats left the harbour one after another.",
)


PROMPT_SETS = ("ioi", "plain", "repeated")
"""Names of the prompt sets; ``repeated`` exists for the checkpoints of our dynamics series only."""


def prompt_set(
    name: str, n_ioi_prompts: int = 128, prompt_seed: int = 0, repeated: Sequence[str] | None = None
) -> tuple[list[str], list[tuple[str, str]] | None]:
    """Texts of a named prompt set and, for IOI, the (IO, S) names of each prompt.

    Args:
        name: one of :data:`PROMPT_SETS`.
        n_ioi_prompts, prompt_seed: size and seed of the IOI set (config keys ``sad.n_ioi_prompts``,
            ``sad.prompt_seed``); the other sets ignore them.
        repeated: the texts of the ``repeated`` set, in order (column ``text`` of the dynamics stage's
            :data:`svalign.tables.DYNAMICS_PROMPTS` table: sequences of the dynamics task, a random segment and
            its copy, in the word-level vocabulary of our trained series).
    """
    if name == "ioi":
        prompts = ioi_prompts(n_ioi_prompts, prompt_seed)
        return [p.text for p in prompts], [(p.io_name, p.s_name) for p in prompts]
    if name == "plain":
        return list(PLAIN_TEXT), None
    if name == "repeated":
        if repeated is None:
            raise ValueError(
                "prompt set repeated is made for the dynamics series only: it needs the texts of the dynamics "
                "stage's prompts table (rule dynamics_prompts)"
            )
        return list(repeated), None
    raise ValueError(f"unknown prompt set {name!r} (expected one of {', '.join(PROMPT_SETS)})")
