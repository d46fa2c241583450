"""The near-miss guard: a second opinion on a pair that embedding similarity calls the same.

Sentence embeddings place "What is 15% of 80?" and "What is 15% of 60?", or "flights from
Paris to Rome" and "flights from Rome to Paris", almost on top of each other, yet their answers
differ. The guard compares the parts of two questions that decide an answer and that a
paraphrase keeps: numbers, dates, named entities, negation, units (and their order), and a
few opposite word pairs ("best"/"worst"). It is deliberately cheap (regular expressions, no
model) and explains every rejection, so a false miss can be traced.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Mismatch(StrEnum):
    NUMBER = "number"
    DATE = "date"
    ENTITY = "entity"
    NEGATION = "negation"
    UNIT = "unit"
    OPPOSITE = "opposite"
    ORDER = "order"
    QUESTION_TYPE = "question-type"


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """``accepted`` unless one of ``reasons`` tells what differs between the questions."""

    reasons: tuple[Mismatch, ...] = ()
    details: tuple[str, ...] = field(default=(), compare=False)

    @property
    def accepted(self) -> bool:
        return not self.reasons


_NUMBER_WORDS = {
    "zero": "0", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11",
    "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16",
    "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30",
    "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
    "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000",
    "billion": "1000000000", "first": "1", "second": "2", "third": "3", "fourth": "4",
    "fifth": "5", "sixth": "6", "seventh": "7", "eighth": "8", "ninth": "9", "tenth": "10",
    "half": "0.5", "twice": "2", "double": "2", "triple": "3",
}  # fmt: skip

_MONTHS = {
    "january": "m1", "jan": "m1", "february": "m2", "feb": "m2", "march": "m3",
    "april": "m4", "apr": "m4", "may": "m5", "june": "m6", "jun": "m6", "july": "m7",
    "jul": "m7", "august": "m8", "aug": "m8", "september": "m9", "sep": "m9", "sept": "m9",
    "october": "m10", "oct": "m10", "november": "m11", "nov": "m11", "december": "m12",
    "dec": "m12",
}  # fmt: skip
_RELATIVE_DAYS = {
    "today": "d0", "tonight": "d0", "tomorrow": "d+1", "yesterday": "d-1",
    "monday": "w1", "tuesday": "w2", "wednesday": "w3", "thursday": "w4", "friday": "w5",
    "saturday": "w6", "sunday": "w7", "weekend": "w67",
}  # fmt: skip
_RELATIVE_PERIOD = re.compile(r"\b(last|next|this|previous|coming)\s+(year|month|week|decade)\b")

# Unit word → canonical unit. Plural and abbreviated spellings share one canonical name, so
# "5 km" and "5 kilometres" agree while "5 km" and "5 miles" do not.
_UNITS = {
    "km": "km", "kms": "km", "kilometer": "km", "kilometers": "km", "kilometre": "km",
    "kilometres": "km", "mile": "mi", "miles": "mi", "mi": "mi", "meter": "m", "meters": "m",
    "metre": "m", "metres": "m", "cm": "cm", "centimeter": "cm", "centimeters": "cm",
    "mm": "mm", "millimeter": "mm", "millimeters": "mm", "inch": "in", "inches": "in",
    "foot": "ft", "feet": "ft", "ft": "ft", "yard": "yd", "yards": "yd", "kg": "kg",
    "kgs": "kg", "kilogram": "kg", "kilograms": "kg", "gram": "g", "grams": "g", "g": "g",
    "lb": "lb", "lbs": "lb", "pound": "lb", "pounds": "lb", "ounce": "oz", "ounces": "oz",
    "oz": "oz", "ton": "t", "tons": "t", "tonne": "t", "tonnes": "t", "liter": "l",
    "liters": "l", "litre": "l", "litres": "l", "ml": "ml", "gallon": "gal", "gallons": "gal",
    "celsius": "degC", "centigrade": "degC", "°c": "degC", "fahrenheit": "degF", "°f": "degF",
    "kelvin": "K", "mph": "mph", "kph": "kmh", "km/h": "kmh", "kmh": "kmh",
    "second": "s", "seconds": "s", "sec": "s", "secs": "s", "minute": "min",
    "minutes": "min", "mins": "min", "hour": "h", "hours": "h", "hrs": "h", "day": "day",
    "days": "day", "week": "wk", "weeks": "wk", "month": "mo", "months": "mo", "year": "yr",
    "years": "yr", "kb": "KB", "mb": "MB", "gb": "GB", "tb": "TB", "kwh": "kWh",
    "watt": "W", "watts": "W", "volt": "V", "volts": "V", "dollar": "USD", "dollars": "USD",
    "usd": "USD", "$": "USD", "euro": "EUR", "euros": "EUR", "eur": "EUR", "€": "EUR",
    "pound sterling": "GBP", "gbp": "GBP", "£": "GBP", "rupee": "INR", "rupees": "INR",
    "rs": "INR", "inr": "INR", "yen": "JPY", "¥": "JPY", "yuan": "CNY", "bitcoin": "BTC",
    "btc": "BTC", "percent": "%", "%": "%",
}  # fmt: skip

_NEGATIONS = frozenset(
    {"not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor",
     "cannot", "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent",
     "wont", "wouldnt", "shouldnt", "couldnt", "havent", "hasnt", "hadnt", "aint"}
)  # fmt: skip

_OPPOSITES = (
    ("best", "worst"), ("better", "worse"), ("advantage", "disadvantage"),
    ("advantages", "disadvantages"), ("pros", "cons"), ("increase", "decrease"),
    ("before", "after"), ("cheapest", "most expensive"), ("cheap", "expensive"),
    ("largest", "smallest"), ("biggest", "smallest"), ("highest", "lowest"),
    ("maximum", "minimum"), ("max", "min"), ("more", "less"), ("most", "least"),
    ("buy", "sell"), ("import", "export"), ("win", "lose"), ("hot", "cold"),
    ("start", "stop"), ("open", "close"), ("enable", "disable"), ("add", "remove"),
    ("legal", "illegal"), ("true", "false"), ("positive", "negative"), ("male", "female"),
    ("men", "women"), ("man", "woman"), ("boy", "girl"), ("north", "south"),
    ("east", "west"), ("up", "down"), ("in", "out"), ("good", "bad"), ("easy", "hard"),
    ("fast", "slow"), ("old", "new"), ("early", "late"), ("love", "hate"),
    ("similar", "differ"), ("similarities", "differences"), ("similarity", "difference"),
    ("soft", "hard"), ("softer", "harder"), ("rich", "poor"), ("richest", "poorest"),
    ("strong", "weak"), ("stronger", "weaker"), ("high", "low"), ("higher", "lower"),
    ("wet", "dry"), ("thick", "thin"), ("heavy", "light"), ("long", "short"),
    ("longest", "shortest"), ("young", "old"), ("youngest", "oldest"), ("above", "below"),
    ("inside", "outside"), ("upload", "download"), ("input", "output"), ("pass", "fail"),
    ("success", "failure"), ("accept", "reject"), ("rise", "fall"), ("gain", "lose"),
    ("push", "pull"), ("introvert", "extrovert"), ("optimist", "pessimist"),
    ("always", "never"), ("safe", "dangerous"), ("healthy", "unhealthy"),
)  # fmt: skip

# Words that make the order of what surrounds them matter ("X better than Y", "X to Y").
_RELATIONS = frozenset({"than", "to", "into", "over", "beat", "beats", "vs", "versus"})
_SYMMETRIC_RELATIONS = frozenset({"vs", "versus"})

# What kind of answer a question asks for; "what"/"which"/"how" say nothing definite.
_ANSWER_TYPES = {
    "why": "reason", "when": "time", "where": "place", "who": "person", "whom": "person",
    "whose": "person",
}  # fmt: skip
# "what/which <noun>" that names the kind of answer ("in which decade", "what year").
_TYPED_NOUNS = {
    "year": "time", "years": "time", "decade": "time", "century": "time", "month": "time",
    "date": "time", "day": "time", "era": "time", "age": "time", "period": "time",
    "country": "place", "countries": "place", "city": "place", "cities": "place",
    "place": "place", "places": "place", "state": "place", "continent": "place",
    "town": "place", "region": "place", "location": "place", "planet": "place",
    "percentage": "quantity", "percent": "quantity", "number": "quantity",
    "amount": "quantity",
}  # fmt: skip
_PARTICLES = frozenset({"in", "up"})
# Words that join two things without ordering them ("Canon or Nikon", "A and B").
_SYMMETRIC_JOINS = frozenset({"and", "or", "nor", "vs", "versus", "between", "with", "&", ","})

_STOPWORDS = frozenset(
    {"a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does",
     "did", "doing", "have", "has", "had", "i", "me", "my", "we", "our", "you", "your", "he",
     "she", "it", "its", "they", "them", "their", "this", "that", "these", "those", "of",
     "in", "on", "at", "by", "for", "with", "about", "as", "and", "or", "but", "if", "so",
     "can", "could", "should", "would", "will", "shall", "may", "might", "must", "what",
     "which", "who", "whom", "whose", "when", "where", "why", "how", "some", "any", "all",
     "there", "here", "one", "get", "much", "many", "very", "really", "just", "also", "from",
     "to", "into", "than", "over", "vs", "versus", "beat", "beats", "s", "'s", "way", "best"}
)  # fmt: skip

_QUESTION_WORDS = frozenset(
    {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "is", "are",
     "was", "were", "do", "does", "did", "can", "could", "should", "would", "will", "shall",
     "may", "might", "i", "i'm", "i've", "i'd", "i'll", "if", "the", "a", "an", "my", "in",
     "on", "for", "to", "of", "and", "or", "it", "this", "that", "there", "has", "have",
     "please", "tell", "give", "explain", "describe", "list", "name", "help", "hi", "hello"}
)  # fmt: skip

_TOKEN = re.compile(r"[$€£¥%]|°[cf]\b|\d+(?:[.,]\d+)*(?:st|nd|rd|th|s)?|[\w'/-]+", re.I)
_DIGITS = re.compile(r"^\d+(?:[.,]\d+)*")
_CAPITALISED = re.compile(r"^(?:[A-Z][\w'-]*|[A-Z]{2,}[\w]*)$")


@dataclass(frozen=True, slots=True)
class QuestionFacts:
    """The answer-deciding parts of one question, as the guard compares them."""

    words: frozenset[str]
    numbers: frozenset[str]
    dates: frozenset[str]
    entities: frozenset[str]
    negations: int
    units: tuple[str, ...]
    relations: tuple[tuple[str, frozenset[str], frozenset[str]], ...]
    answer_type: str | None
    sequence: tuple[str, ...] = field(default=(), compare=False)  # the tokens, as written


def _normalise_number(token: str) -> str:
    digits = _DIGITS.match(token)
    raw = digits.group(0) if digits else token
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", raw):
        raw = raw.replace(",", "")
    raw = raw.replace(",", ".")
    try:
        value = float(raw)
    except ValueError:
        return raw
    return f"{value:g}"


def _stem(word: str) -> str:
    """A very small stemmer so "Germany's" matches "germany" and "cars" matches "car"."""
    word = word.lower()
    word = word.removesuffix("'s").removesuffix("'")
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def extract_facts(text: str) -> QuestionFacts:
    """Pull numbers, dates, entities, negation and units out of one question."""
    text = text.replace("\u2019", "'")  # typographic apostrophe
    tokens = _TOKEN.findall(text)
    lowered = [token.lower() for token in tokens]
    numbers: set[str] = set()
    dates: set[str] = set()
    entities: set[str] = set()
    units: list[str] = []
    negations = 0
    for position, (token, lower) in enumerate(zip(tokens, lowered, strict=True)):
        bare = lower.replace("'", "")
        if bare in _NEGATIONS or lower.endswith("n't"):
            negations += 1
        if token[0].isdigit():
            value = _normalise_number(token)
            if re.fullmatch(r"(1[5-9]|20)\d\d", value):
                dates.add(value)
            else:
                numbers.add(value)
            continue
        if lower in _NUMBER_WORDS:
            numbers.add(_NUMBER_WORDS[lower])
            continue
        if lower in _MONTHS and (lower != "may" or token[0].isupper()):
            if lower not in {"march", "may"} or token[0].isupper():
                dates.add(_MONTHS[lower])
            continue
        if lower in _RELATIVE_DAYS:
            dates.add(_RELATIVE_DAYS[lower])
            continue
        if lower in _UNITS:
            units.append(_UNITS[lower])
            continue
        starts_sentence = position == 0 or tokens[position - 1] in {".", "?", "!"}
        if (
            _CAPITALISED.match(token)
            and lower not in _QUESTION_WORDS
            and not (starts_sentence and token[1:].islower())
        ):
            entities.add(_stem(lower))
    for match in _RELATIVE_PERIOD.finditer(text.lower()):
        dates.add(f"{match.group(1)}-{match.group(2)}")
    return QuestionFacts(
        words=frozenset(_stem(word) for word in lowered),
        numbers=frozenset(numbers),
        dates=frozenset(dates),
        entities=frozenset(entities),
        negations=negations,
        units=tuple(units),
        relations=_relations(lowered),
        answer_type=_answer_type(lowered),
        sequence=tuple(tokens),
    )


def _answer_type(lowered: list[str]) -> str | None:
    for position, word in enumerate(lowered):
        following = lowered[position + 1] if position + 1 < len(lowered) else ""
        if word in _ANSWER_TYPES:
            return _ANSWER_TYPES[word]
        if word == "how" and following in {"many", "much"}:
            return "quantity"
        if word in {"what", "which"} and following in _TYPED_NOUNS:
            return _TYPED_NOUNS[following]
    return None


def _relations(lowered: list[str]) -> tuple[tuple[str, frozenset[str], frozenset[str]], ...]:
    """For each relation word, the content words just before and just after it."""
    found = []
    for position, word in enumerate(lowered):
        if word not in _RELATIONS or word in _SYMMETRIC_RELATIONS:
            continue
        before = [w for w in lowered[max(0, position - 4) : position] if w not in _STOPWORDS]
        after = [w for w in lowered[position + 1 : position + 5] if w not in _STOPWORDS]
        found.append(
            (word, frozenset(_stem(w) for w in before[-3:]), frozenset(_stem(w) for w in after[:3]))
        )
    return tuple(found)


def _swapped(a: QuestionFacts, b: QuestionFacts) -> str | None:
    """A word before a relation in one question and after it in the other, and vice versa
    ("convert X to Y" / "convert Y to X", "A better than B" / "B better than A")."""
    for relation, before_a, after_a in a.relations:
        for other, before_b, after_b in b.relations:
            if relation != other:
                continue
            moved_back = (before_a & after_b) - after_a
            moved_forward = (after_a & before_b) - before_a
            if moved_back and moved_forward:
                return f"{sorted(moved_back)} {relation} {sorted(moved_forward)} reversed"
    return None


_PREPOSITIONS = frozenset(
    {"of", "in", "on", "at", "for", "from", "by", "about", "with", "without", "to", "into",
     "than", "over", "under", "near", "around", "like", "as", "via", "per", "through"}
)  # fmt: skip


def _role_reversal(tokens_a: Sequence[str], tokens_b: Sequence[str]) -> str | None:
    """Two things that trade places around one word both questions put tightly between
    them ("Poles dislike Russians" / "Russians dislike Poles", "terrorists are Muslim" /
    "Muslims are terrorists"). The two must look like who-or-what (a name or a plural);
    the word between them may be any but a preposition or a join ("Canon or Nikon")."""
    found_a = _agent_triples(tokens_a)
    for first, pivot, second in _agent_triples(tokens_b):
        if (second, pivot, first) in found_a and first != second:
            return f"{second} {pivot} {first} reversed"
    return None


def _names_someone(token: str, index: int) -> bool:
    """A name inside the sentence ("Poles") or a plural ("terrorists")."""
    named = token[0].isupper() and index > 0
    return named or (len(token) > 3 and _stem(token) != token.lower())


def _agent_triples(tokens: Sequence[str]) -> set[tuple[str, str, str]]:
    """(X, P, Y) for X [one filler word] P [one filler word] Y, X and Y names or plurals."""
    lowered = [token.lower() for token in tokens]
    agents = {
        index
        for index, token in enumerate(tokens)
        if lowered[index] not in _STOPWORDS and token.isalpha() and _names_someone(token, index)
    }
    triples: set[tuple[str, str, str]] = set()
    for x in agents:
        for pivot in range(x + 1, min(x + 3, len(tokens))):
            word = lowered[pivot]
            if word in _PREPOSITIONS or word in _SYMMETRIC_JOINS or pivot in agents:
                continue
            for y in range(pivot + 1, min(pivot + 3, len(tokens))):
                if y in agents and not _SYMMETRIC_JOINS & set(lowered[x + 1 : y]):
                    triples.add((_stem(tokens[x]), _stem(word), _stem(tokens[y])))
    return triples


def _opposite_swaps(a: QuestionFacts, b: QuestionFacts, text_a: str, text_b: str) -> list[str]:
    swaps = []
    words_a = " " + " ".join(re.findall(r"[a-z]+", text_a.lower())) + " "
    words_b = " " + " ".join(re.findall(r"[a-z]+", text_b.lower())) + " "
    spaced_a, spaced_b = f" {text_a.lower()} ", f" {text_b.lower()} "
    for left, right in _OPPOSITES:
        # particles ("play out", "zoom in") only count as words standing alone
        lower_a, lower_b = (spaced_a, spaced_b) if left in _PARTICLES else (words_a, words_b)
        left_a, right_a = f" {left} " in lower_a, f" {right} " in lower_a
        left_b, right_b = f" {left} " in lower_b, f" {right} " in lower_b
        if (left_a and not left_b and right_b and not right_a) or (
            right_a and not right_b and left_b and not left_a
        ):
            swaps.append(f"{left}/{right}")
    del a, b
    return swaps


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """Which checks run; each is one kind of near-miss. All on by default."""

    numbers: bool = True
    dates: bool = True
    order: bool = True
    question_type: bool = True
    entities: bool = True
    negation: bool = True
    units: bool = True
    opposites: bool = True


class NearMissGuard:
    """Reject a candidate whose answer-deciding facts differ from the query's."""

    def __init__(self, policy: GuardPolicy | None = None) -> None:
        self.policy = policy or GuardPolicy()

    def check(self, query: str, candidate: str) -> GuardVerdict:
        return compare_facts(query, candidate, extract_facts(query), extract_facts(candidate),
                             self.policy)  # fmt: skip


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance with adjacent transpositions, or ``limit + 1`` if above it."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, 1):
            current[j] = min(
                previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)
            )
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def spelling_variants(a: str, b: str) -> bool:
    """Whether two names are spellings of one ("Hillary"/"Hilary", "Sweden"/"Sweeden"):
    one edit apart from 5 letters on, two from 8 ("Iran"/"Iraq", "Austria"/"Australia"
    stay different), and neither a prefix of the other ("Niger"/"Nigeria", "Stone"/"Stoned",
    "India"/"Indian" are other words)."""
    shorter = min(len(a), len(b))
    if shorter < 5 or a[0] != b[0] or a.startswith(b) or b.startswith(a):
        return False
    limit = 2 if shorter >= 8 else 1
    return _edit_distance(a, b, limit) <= limit


def _entity_substitution(a: QuestionFacts, b: QuestionFacts) -> tuple[set[str], set[str]]:
    """Entities of each side that the other side does not mention at all (a spelling
    variant of a word on the other side counts as a mention)."""
    only_a = {entity for entity in a.entities if entity not in b.words}
    only_b = {entity for entity in b.entities if entity not in a.words}
    variants_a = {e for e in only_a if any(spelling_variants(e, w) for w in b.words)}
    variants_b = {e for e in only_b if any(spelling_variants(e, w) for w in a.words)}
    return only_a - variants_a, only_b - variants_b


def compare_facts(
    query: str,
    candidate: str,
    a: QuestionFacts,
    b: QuestionFacts,
    policy: GuardPolicy,
) -> GuardVerdict:
    reasons: list[Mismatch] = []
    details: list[str] = []
    if policy.numbers and a.numbers != b.numbers:
        reasons.append(Mismatch.NUMBER)
        details.append(f"numbers {sorted(a.numbers)} vs {sorted(b.numbers)}")
    if policy.dates and a.dates != b.dates:
        reasons.append(Mismatch.DATE)
        details.append(f"dates {sorted(a.dates)} vs {sorted(b.dates)}")
    if policy.entities:
        only_a, only_b = _entity_substitution(a, b)
        if only_a and only_b:
            reasons.append(Mismatch.ENTITY)
            details.append(f"entities {sorted(only_a)} vs {sorted(only_b)}")
    if policy.order and (swap := _swapped(a, b) or _role_reversal(a.sequence, b.sequence)):
        reasons.append(Mismatch.ORDER)
        details.append(swap)
    if (
        policy.question_type
        and a.answer_type is not None
        and b.answer_type is not None
        and a.answer_type != b.answer_type
    ):
        reasons.append(Mismatch.QUESTION_TYPE)
        details.append(f"asks for {a.answer_type} vs {b.answer_type}")
    if policy.negation and (a.negations % 2) != (b.negations % 2):
        reasons.append(Mismatch.NEGATION)
        details.append(f"negations {a.negations} vs {b.negations}")
    if policy.units and a.units and b.units and Counter(a.units) != Counter(b.units):
        reasons.append(Mismatch.UNIT)
        details.append(f"units {list(a.units)} vs {list(b.units)}")
    elif policy.units and a.units and b.units and a.units != b.units:
        reasons.append(Mismatch.UNIT)
        details.append(f"unit order {list(a.units)} vs {list(b.units)}")
    if policy.opposites:
        swaps = _opposite_swaps(a, b, query, candidate)
        if swaps:
            reasons.append(Mismatch.OPPOSITE)
            details.append("opposites " + ", ".join(swaps))
    return GuardVerdict(tuple(reasons), tuple(details))
