"""Text units for the quality filters: words, sentences, lines, paragraphs and n-grams.

The prose filters reproduce datatrove 0.10.1 (Penedo et al., 2024), which counts English words with
spaCy's blank English tokenizer and sentences with spaCy's rule-based sentencizer. `split_words`
re-implements that tokenizer's algorithm with `str` methods and precompiled `re` patterns, so the
filters count the same units without spaCy:

1. the text is cut at whitespace (`str.split`) into chunks;
2. a chunk that is a special case is split as the case says: contractions ("don't" -> "do", "n't";
   "I'm" -> "I", "'m"; also "dont" -> "do", "nt"), times ("10am"), abbreviations that keep their
   period ("e.g.", "Mr.", "Jan."), emoticons;
3. otherwise prefixes (opening punctuation, quotes, brackets, currency signs, symbols) and suffixes
   (closing punctuation, quotes, "'s", units and currency after a digit, a period after a lowercase
   letter, a digit, punctuation or two capitals) come off one at a time, stopping at a special case;
4. what remains stays whole if it looks like a URL or e-mail address, else splits at infixes: a
   hyphen, dash, tilde, slash, colon or comparison sign before a letter, a comma between letters,
   a period between a lowercase and an uppercase letter, ellipses, symbols;
5. adjacent pieces of one chunk that spell a special case containing punctuation are merged back
   (the emoticon "):" in "f(x):", as spaCy's special-case matcher does).

So "well-known" is three words, "end." two, "can't" two, "3.5" and "1,000" one, and punctuation
comes out as words of its own, which the Gopher filters count as symbol words or non-alphabetic
words exactly as datatrove does. Chunks repeat, so each chunk's split is memoised, and the words of
the last few texts are memoised too, so a chain of filters splits each document once.

Where this differs from spaCy 3.8, and why it rarely changes a decision:
- letter classes come from Unicode categories in the Basic Multilingual Plane (lowercase: Ll and
  uncased letters; uppercase: Lu, Lt and uncased letters; symbols: So), where spaCy lists letters
  per script from an older Unicode: only letters of scripts spaCy does not list (Armenian,
  Georgian, ...), combining marks of Indic scripts, and characters outside the common blocks
  split differently, and English text has almost none;
- merging looks at one chunk: spaCy also finds special cases spelled across whitespace (": p" as
  the emoticon ":p"), never applies them, but lets them block an overlapping merge, so "try: p.Parse"
  keeps "p", "." apart in spaCy and gives "p." here (two chunks in four million differed so);
- the sentencizer's sentence-final characters are datatrove's TERMINAL_PUNCTUATION, a superset
  of spaCy's by 31 characters of Khmer, Samaritan, Arabic and a few other scripts.
The special-case table and the affix, infix and URL rules otherwise follow spaCy's English
defaults, including their order of application.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import accumulate, chain, compress, count
from operator import itemgetter

# datatrove's TERMINAL_PUNCTUATION, sentence-final marks of many scripts: FineWeb's line endings
# and, here, the sentencizer's sentence ends.
TERMINAL_PUNCTUATION = tuple(
    "!.?։؝؞؟۔܀܁܂߹࠷࠹࠽࠾।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟\u1b7d\u1b7e᰻᰼᱾᱿។៕៖៙៚‼‽⁇⁈⁉⸮⸼\u2e53\u2e54"
    "꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹒﹖﹗！．？｡。𐩖𐩗𐽕𐽖𐽗𐽘𐽙\U00010f86\U00010f87\U00010f88\U00010f89"
    "𑁇𑁈𑂾𑂿𑃀𑃁𑅁𑅂𑅃𑇅𑇆𑇍𑇞𑇟𑈸𑈹𑈻𑈼𑊩𑑋𑑌𑗂𑗃𑗉𑗊𑗋𑗌𑗍𑗎𑗏𑗐𑗑𑗒𑗓𑗔𑗕𑗖𑗗𑙁𑙂𑜼𑜽𑜾𑥄𑥆𑩂𑩃𑪛𑪜𑱁𑱂𑻷𑻸"
    "\U00011f43\U00011f44𖩮𖩯𖫵𖬷𖬸𖭄𖺘𛲟𝪈"
)
# datatrove's PUNCTUATION (ASCII and CJK punctuation, a few symbols, the fullwidth digit one, the C0
# and C1 control characters) and TERMINAL_PUNCTUATION: a word made only of these is a "symbol word",
# which Gopher's word count leaves out.
PUNCTUATION = frozenset(
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, chain(range(9), range(11, 32), range(127, 160))))
).union(TERMINAL_PUNCTUATION)


def _class_body(codepoints: Iterable[int]) -> str:
    """The inside of a regex character class matching exactly `codepoints` (sorted), as ranges."""
    parts: list[str] = []
    start = prev = -2
    for cp in codepoints:
        if cp != prev + 1:
            if start >= 0:
                parts.append(f"\\U{start:08x}-\\U{prev:08x}")
            start = cp
        prev = cp
    if start >= 0:
        parts.append(f"\\U{start:08x}-\\U{prev:08x}")
    return "".join(parts)


def _unicode_classes() -> tuple[str, str, str, str, str]:
    """Class bodies for lowercase, uppercase, any letter, other symbols (So) and punctuation (P*):
    by category in the Basic Multilingual Plane (uncased letters count as both cases, as in spaCy);
    beyond it, like spaCy, only the CJK extension letters and the emoji and musical symbol blocks.
    Few ranges outside the BMP keep the patterns fast: `re` scans those ranges one by one."""
    lower, upper, letter, symbol, punct = [], [], [], [], []
    for cp in range(0x10000):
        cat = unicodedata.category(chr(cp))
        if cat[0] == "L":
            letter.append(cp)
            if cat in ("Ll", "Lo"):
                lower.append(cp)
            if cat in ("Lu", "Lt", "Lo"):
                upper.append(cp)
        elif cat == "So":
            symbol.append(cp)
        elif cat[0] == "P":
            punct.append(cp)
    cjk = "\\U00020000-\\U0002fa1f"
    return (
        _class_body(lower) + cjk,
        _class_body(upper) + cjk,
        _class_body(letter) + cjk,
        _class_body(symbol) + "\\U0001d000-\\U0001d24f\\U0001f000-\\U0001faff",
        _class_body(punct),
    )


_LOWER, _UPPER, _ALPHA, _SYMBOL, _PUNCT = _unicode_classes()
_PUNCT_CHARS = re.escape("…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪")
_QUOTES = re.escape("'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉\u2329\u232a⟦⟧")
_CURRENCY = "$£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿"
_UNITS = (
    "km", "km²", "km³", "m", "m²", "m³", "dm", "dm²", "dm³", "cm", "cm²", "cm³", "mm", "mm²", "mm³", "ha", "µm", "nm",
    "yd", "in", "ft", "kg", "g", "mg", "µg", "t", "lb", "oz", "m/s", "km/h", "kmh", "mph", "hPa", "Pa", "mbar", "mb",
    "MB", "kb", "KB", "gb", "GB", "tb", "TB", "T", "G", "M", "K", "%", "км", "км²", "км³", "м", "м²", "м³", "дм", "дм²",
    "дм³", "см", "см²", "см³", "мм", "мм²", "мм³", "нм", "кг", "г", "мг", "м/с", "км/ч", "кПа", "Па", "мбар", "Кб", "КБ",
    "кб", "Мб", "МБ", "мб", "Гб", "ГБ", "гб", "Тб", "ТБ", "тб",
)

_PREFIX = re.compile(
    rf"[§%=—–{_PUNCT_CHARS}{_QUOTES}{re.escape(_CURRENCY)}{_SYMBOL}]|\.\.+|(?:US|C|A)\$|\+(?![0-9])"
)
_SUFFIX = re.compile(
    rf"(?:[{_PUNCT_CHARS}{_QUOTES}{_SYMBOL}—–]|……|\.\.+|['’][sS]"
    rf"|(?<=[0-9])(?:\+|[{re.escape(_CURRENCY)}]|(?:US|C|A)\$|{'|'.join(map(re.escape, _UNITS))})"
    rf"|(?<=°[FfCcKk])\.|(?<=[0-9{_LOWER}%²\-+{_PUNCT_CHARS}{_QUOTES}|])\.|(?<=[{_UPPER}][{_UPPER}])\.)$"
)
_INFIX = re.compile(
    rf"\.\.+|…|[{_SYMBOL}]|(?<=[0-9])[+\-*^](?=[0-9-])|(?<=[{_LOWER}{_QUOTES}])\.(?=[{_UPPER}{_QUOTES}])"
    rf"|(?<=[{_ALPHA}]),(?=[{_ALPHA}])|(?<=[{_ALPHA}0-9])(?:-|–|—|--|---|——|~)(?=[{_ALPHA}])"
    rf"|(?<=[{_ALPHA}0-9])[:<>=/](?=[{_ALPHA}])"
)
_LONGEST_SUFFIX = max(map(len, _UNITS))
_INFIX_HINT = re.compile(rf"[.…,\-–—~:<>=/+*^{_SYMBOL}]")  # a character every infix contains
_URL_CHAR = "A-Za-z0-9\u00a1-\uffff"
_PUBLIC_IPV4 = (  # dotted quads outside the private, loopback and link-local ranges
    r"(?!(?:10|127)(?:\.\d{1,3}){3})(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})(?!172\.(?:1[6-9]|2\d|3[01])(?:\.\d{1,3}){2})"
    r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4])"
)
_URL = re.compile(
    r"(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?"
    rf"(?:{_PUBLIC_IPV4}|(?:(?:[{_URL_CHAR}][{_URL_CHAR}_-]{{0,62}})?[{_URL_CHAR}]\.)+[{_LOWER}]{{2,63}})"
    r"(?::\d{2,5})?(?:[/?#]\S*)?"
)
_ALL_PUNCT = re.compile(f"[{_PUNCT}]+")


def _special_cases() -> dict[str, tuple[str, ...]]:
    """spaCy's English tokenizer exceptions: chunks split (or kept whole) by rule, not by affixes."""
    table: dict[str, tuple[str, ...]] = {}

    def add(*tokens: str, bare: bool = True) -> None:
        # each case also comes with a curly apostrophe and, if `bare`, without apostrophes
        variants = {tokens, tuple(t.replace("'", "’") for t in tokens)}
        if bare:
            variants.add(tuple(t.replace("'", "") for t in tokens))
        for variant in variants:
            table["".join(variant)] = variant

    clitics = [
        (["i"], ["'m", "'m a"]),
        (["i", "you", "he", "she", "it", "we", "they"], ["'ll", "'ll 've", "'d", "'d 've"]),
        (["i", "you", "we", "they"], ["'ve"]),
        (["you", "we", "they"], ["'re"]),
        (["he", "she", "it", "who", "what", "when", "where", "why", "how", "there", "that", "this"], ["'s"]),
        (["who", "what", "when", "where", "why", "how", "there", "that", "this", "these", "those"],
         ["'ll", "'ll 've", "'d", "'d 've"]),
        (["who", "what", "when", "where", "why", "how", "there", "these", "those"], ["'re", "'ve"]),
        (["ca", "could", "do", "does", "did", "had", "may", "might", "must", "need", "ought", "sha", "should",
          "wo", "would"], ["n't", "n't 've"]),
        (["could", "might", "must", "should", "would"], ["'ve"]),
        (["ai", "are", "is", "was", "were", "have", "has", "dare"], ["n't"]),
    ]
    for stems, endings in clitics:
        for stem in stems:
            for word in (stem, stem.title()):
                for ending in endings:
                    add(word, *ending.split())
    for word in ("how", "How"):
        add(word, "'d", "'y", bare=False)
    for word in ("not", "Not"):
        add(word, "'ve")
    for first, second in (("can", "not"), ("gon", "na"), ("got", "ta")):
        add(first, second, bare=False)
        add(first.title(), second, bare=False)
    for tokens in (("let", "'s"), ("Let", "'s"), ("c'm", "on"), ("C'm", "on")):
        add(*tokens, bare=False)
    add("y'", "all")
    for hour in range(1, 13):
        for period in ("a.m.", "am", "p.m.", "pm"):
            add(str(hour), period, bare=False)
    for unit in "cfkCFK":
        add("°", unit, ".", bare=False)
    for word in ("doin", "goin", "havin", "lovin", "nothin", "nuthin", "ol", "somethin"):
        for w in (word, word.title()):
            add(w)
            add(w + "'", bare=False)
    for word in ("em", "ll", "nuff"):
        add(word)
    single = (
        "'s 'S ‘s ‘S 'd 're 'em 'll 'nuff 'Cause 'cause 'Cos 'cos 'Coz 'coz 'Cuz 'cuz 'bout ma'am Ma'am "
        "o'clock O'clock ' '' — and/or w/o C++ <space> \\n \\t \\\") "
        "Adm. Ak. Ala. Apr. Ariz. Ark. Aug. Bros. Calif. Co. co. Colo. Conn. Corp. D.C. Dec. Del. Dr. "
        "E.G. E.g. e.g. Feb. Fla. Ga. Gen. Gov. I.E. I.e. i.e. Ia. Id. Ill. Inc. Ind. Jan. Jr. Jul. Jun. "
        "Kan. Kans. Ky. La. Ltd. Mar. Mass. Md. Messrs. Mich. Minn. Miss. Mo. Mont. Mr. Mrs. Ms. Mt. "
        "N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov. Oct. Okla. Ore. Pa. Ph.D. Prof. Rep. Rev. "
        "S.C. Sen. Sep. Sept. St. Tenn. Va. Wash. Wis. a.m. p.m. v.s. vs. ä. ö. ü. "
        # emoticons
        ":) :-) :)) :-)) :))) :-))) (: (-: =) (= :] :-] [: [-: [= =] :o) (o: :} :-} 8) 8-) (-8 ;) ;-) (; (-; "
        ":( :-( :(( :-(( :((( :-((( ): )-: =( >:( :') :'-) :'( :'-( :/ :-/ =/ :| =| :-| ]= =[ :1 :P :-P :p "
        ":-p :O :-O :o :-o :0 :-0 :() >:o :* :-* :3 :-3 =3 :> :-> :X :-X :x :-x :D :-D ;D ;-D =D xD XD xDD "
        "XDD 8D 8-D ^_^ ^__^ ^___^ >.< >.> <.< ._. ;_; -_- -__- v.v V.V v_v V_V o_o o_O O_o O_O 0_o o_0 0_0 "
        "o.o O.O 0.o o.0 0.0 o.O O.o @_@ <3 <33 <333 </3 (^_^) (-_-) (._.) (>_<) (*_*) (¬_¬) ಠ_ಠ ಠ︵ಠ "
        "(ಠ_ಠ) ¯\\(ツ)/¯ (╯°□°）╯︵┻━┻ ><(((*>"
    )
    for word in single.split() + [f"{letter}." for letter in "abcdefghijklmnopqrstuvwxyz"]:
        table.setdefault(word, (word,))
        table.setdefault(word.replace("'", "’"), (word.replace("'", "’"),))
    for word in ("ill", "its", "hell", "shell", "shed", "were", "well", "whore"):
        table.pop(word, None)
        table.pop(word.title(), None)
    return table


_SPECIAL = _special_cases()


def _peel_affixes(chunk: str, specials: dict) -> tuple[list[str], str, list[str]]:
    """Peel prefixes and suffixes off `chunk` one at a time (spaCy's order, stopping at a special
    case); returns the prefixes, what remains, and the suffixes innermost first."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    rest = chunk
    size = 0
    while rest and len(rest) != size:
        if rest in specials:
            break
        size = len(rest)
        m = _PREFIX.match(rest)
        pre = m.end() if m else 0
        if pre and rest[pre:] in specials:
            prefixes.append(rest[:pre])
            rest = rest[pre:]
            break
        tail = rest[pre:]
        # a suffix is a run of periods or at most _LONGEST_SUFFIX characters: search only there
        window = max(_LONGEST_SUFFIX, len(tail) - len(tail.rstrip(".")))
        m = _SUFFIX.search(tail, max(0, len(tail) - window))
        suf = len(tail) - m.start() if m else 0
        if suf and rest[:-suf] in specials:
            suffixes.append(rest[-suf:])
            rest = rest[:-suf]
            break
        if pre:
            prefixes.append(rest[:pre])
        if suf:
            suffixes.append(rest[-suf:])
        rest = rest[pre : len(rest) - suf]
        if rest in specials:
            break
    return prefixes, rest, suffixes


def _split_infixes(rest: str) -> list[str]:
    """Split what the affixes left at its infixes (a match at the very start does not split)."""
    if not _INFIX_HINT.search(rest):
        return [rest]
    pieces: list[str] = []
    start = 0
    for m in _INFIX.finditer(rest):
        if m.start() == 0:
            continue
        if m.start() != start:
            pieces.append(rest[start : m.start()])
        if m.end() != m.start():
            pieces.append(m.group())
        start = m.end()
    if start < len(rest):
        pieces.append(rest[start:])
    return pieces


def _split_by_rules(chunk: str, specials: dict) -> list[str]:
    """Affixes, then the special case, URL or infix split of the remainder (no merging)."""
    prefixes, rest, suffixes = _peel_affixes(chunk, specials)
    if not rest:
        middle: Sequence[str] = ()
    elif rest in specials:
        middle = specials[rest]
    elif _URL.fullmatch(rest):
        middle = (rest,)
    else:
        middle = _split_infixes(rest)
    return [*prefixes, *middle, *reversed(suffixes)]


def _merge_patterns() -> dict[tuple[str, ...], tuple[str, ...]]:
    """Special cases that the affix rules would split, keyed by the pieces they split into."""
    patterns = {}
    for text, tokens in _SPECIAL.items():
        pieces = tuple(_split_by_rules(text, {}))
        if len(pieces) > 1:
            patterns[pieces] = tokens
    return patterns


_MERGE = _merge_patterns()
_MERGE_FIRST = frozenset(p[0] for p in _MERGE)
_MERGE_SIZES = sorted({len(p) for p in _MERGE}, reverse=True)


def _merge_specials(tokens: list[str]) -> list[str]:
    """Merge runs of pieces that spell a special case, longest runs first, then leftmost first; a run
    is merged when its ends overlap no run considered before it (as spaCy's special-case matcher)."""
    found = [
        (size, start)
        for start, tok in enumerate(tokens)
        if tok in _MERGE_FIRST
        for size in _MERGE_SIZES
        if start + size <= len(tokens) and tuple(tokens[start : start + size]) in _MERGE
    ]
    if not found:
        return tokens
    found.sort(key=lambda m: (-m[0], m[1]))
    taken: set[int] = set()
    chosen = {}
    for size, start in found:
        if start not in taken and start + size - 1 not in taken:
            chosen[start] = size
        taken.update(range(start, start + size))  # a run that loses still blocks the runs after it
    merged: list[str] = []
    i = 0
    while i < len(tokens):
        if i in chosen:
            merged.extend(_MERGE[tuple(tokens[i : i + chosen[i]])])
            i += chosen[i]
        else:
            merged.append(tokens[i])
            i += 1
    return merged


@lru_cache(maxsize=1 << 16)
def split_chunk(chunk: str) -> tuple[str, ...]:
    """The words of one whitespace-free chunk, as spaCy's English tokenizer splits it."""
    special = _SPECIAL.get(chunk)
    if special is not None:
        return special
    tokens = _split_by_rules(chunk, _SPECIAL)
    if len(tokens) > 1:
        tokens = _merge_specials(tokens)
    return tuple(tokens)


@lru_cache(maxsize=8)
def split_words(text: str) -> tuple[str, ...]:
    """The words of `text` as datatrove counts them for English: spaCy-style tokens, whitespace dropped."""
    return tuple(chain.from_iterable(map(split_chunk, text.split())))


_PIECES = re.compile(r"\S+|\s+")
_SENTENCE_END = frozenset(TERMINAL_PUNCTUATION)


def sentence_starts(text: str) -> list[int]:
    """Offsets where spaCy's sentencizer starts sentences in `text` (always 0 first): a sentence
    ends at a sentence-final character and any punctuation after it. A whitespace run other than a
    single space is a token of its own and so can start a sentence, as in spaCy."""
    starts = [0]
    ended = False
    for m in _PIECES.finditer(text):
        piece = m.group()
        if piece[0].isspace():
            if piece != " " and ended:
                starts.append(m.start() + (piece[0] == " "))
                ended = False
            continue
        offset = m.start()
        for tok in split_chunk(piece):
            if tok in _SENTENCE_END:
                ended = True
            elif ended and not _ALL_PUNCT.fullmatch(tok):
                starts.append(offset)
                ended = False
            offset += len(tok)
    return starts


def split_sentences(text: str) -> list[str]:
    """`text` cut where sentences start; the pieces keep their surrounding whitespace."""
    starts = sentence_starts(text)
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


_LINE_RUNS = re.compile(r"\n+")
_PARAGRAPH_BREAKS = re.compile(r"\n{2,}")


def split_lines(text: str) -> list[str]:
    """Lines at any line boundary (`str.splitlines`): Gopher quality's and C4's lines."""
    return text.splitlines()


def split_line_runs(text: str) -> list[str]:
    """Lines between runs of newlines, keeping a leading or trailing empty one: Gopher repetition's."""
    return _LINE_RUNS.split(text)


def split_nonblank_lines(text: str) -> list[str]:
    """The lines between single newlines that hold more than whitespace: FineWeb's lines."""
    return [line for line in text.split("\n") if line.strip()]


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs: the stripped text cut at blank lines (two or more newlines)."""
    return _PARAGRAPH_BREAKS.split(text.strip())


def is_symbol_word(word: str) -> bool:
    """True when every character of `word` is punctuation in datatrove's sense."""
    return PUNCTUATION.issuperset(word)


def duplicates(items: Sequence[str]) -> tuple[int, int]:
    """Items that repeat an earlier one: how many, and their total length in characters."""
    counts = Counter(items)
    repeated = sum(len(item) * (count - 1) for item, count in counts.items() if count > 1)
    return len(items) - len(counts), repeated


def top_ngram_chars(words: Sequence[str], n: int) -> int:
    """Characters covered by the most frequent word n-gram (joined by spaces) times its count;
    the first one seen wins a tie. 0 when there are fewer than n words."""
    if len(words) < n:
        return 0
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, times = max(counts.items(), key=itemgetter(1))
    return (sum(map(len, gram)) + n - 1) * times


def duplicated_ngram_chars(words: Sequence[str], n: int) -> int:
    """Characters in repeated word n-grams, scanning left to right as datatrove does: an n-gram (its
    words concatenated) seen before adds its length and the scan jumps past it; otherwise the scan
    moves one word on. Positions whose n-gram occurs once never add, so only repeats are visited."""
    if len(words) < n:
        return 0
    offsets = list(accumulate(map(len, words), initial=0))
    grams = list(map("".join(words).__getitem__, map(slice, offsets, offsets[n:])))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return 0
    repeated = set(compress(counts.keys(), map((1).__lt__, counts.values())))
    seen: set[str] = set()
    total = 0
    resume = 0
    for i in compress(count(), map(repeated.__contains__, grams)):
        if i < resume:
            continue
        gram = grams[i]
        if gram in seen:
            total += len(gram)
            resume = i + n
        else:
            seen.add(gram)
    return total
