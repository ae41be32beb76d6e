"""BERT's WordPiece vocabulary (a vocab.txt, one token a line) as a seqio vocabulary.

Text becomes ids as HF's `BertTokenizer` makes them (the tokenizers-backed
one, `BertTokenizerFast` in transformers 4):

1. clean: drop NUL, U+FFFD and control/format/private-use characters (Unicode
   category C except tab, newline, carriage return); every whitespace
   character becomes a space;
2. put spaces around CJK ideographs (each becomes a word of its own);
3. with `lowercase` (HF's do_lower_case): strip accents (NFD, drop
   nonspacing marks, category Mn), then lowercase;
4. split at whitespace and cut every punctuation character (ASCII
   punctuation or Unicode category P) out as a word of its own;
5. each word: greedy longest-match-first WordPiece, continuations written
   "##piece"; a word with a character no piece covers, or longer than 100
   characters, becomes [UNK].

The special tokens [PAD], [UNK], [CLS], [SEP] and [MASK] written in the text
are kept whole (their own ids, not "[", "mask", "]"), as HF does, so cloze
prompts can hold [MASK].

Two paths give the same ids: Python (`encode`, through the `tokenizers`
package's BERT normalizer, pre-tokenizer and WordPiece model) and TensorFlow
(`encode_tf`, for seqio's tf.data pipelines: regex steps and
tensorflow_text's WordpieceTokenizer). Known differences, none of them
in ordinary text: unassigned code points (category Cn) are dropped by
the Python path and kept by the TF path (RE2 has no class for them), and
characters of recent Unicode versions that RE2's and ICU's tables do not
know yet (a few hundred code points of rare scripts: new punctuation,
combining marks, format characters) are classed differently. Checked one
code point at a time over all of Unicode (tokenizers 0.23.3, transformers
5.24.0), the Python path equals HF's everywhere.

seqio conventions: `encode` adds no [CLS]/[SEP] (the BERT preprocessors in
t5mtl/data/bert_objective.py place them); `eos_id` is None, since BERT has
no end-of-sequence token and [SEP] is a separator those preprocessors place,
so BERT task features use `add_eos=False` (seqio cannot append a None EOS).
`decode` drops [PAD] (id 0; seqio pads with 0) and then writes what HF's
`decode` writes (its WordPiece decoder): pieces joined with spaces, "##"
continuations glued to the piece before, no space before . , ? ! ; the
other special tokens are written out.

[PAD] must be id 0: seqio's feature converters pad every feature with 0 and
the masked-LM targets use 0 for "no target", so a vocabulary with [PAD]
elsewhere is refused rather than remapped (remapping would change the ids
every BERT checkpoint made with that vocab.txt expects).
"""
from __future__ import annotations

import functools
import hashlib

import seqio
import tensorflow as tf

from t5mtl.errors import T5mtlError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION_PREFIX = "##"
MAX_CHARS_PER_WORD = 100
# HF's WordPiece decoder cleans each token (with its leading space) thus.
DECODE_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                  (" n't", "n't"), (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"),
                  (" 've", "'ve"), (" 're", "'re"))

# The character classes of the steps above, in RE2 syntax (TF's regex ops).
_WHITESPACE = r"[\t\n\r\p{Z}]"
_CONTROL = r"[\x{FFFD}\p{C}]"  # tab, newline and CR were made spaces first
_CJK = (r"[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
        r"\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]")
_PUNCTUATION = r"[!-/:-@\[-`{-~\p{P}]"
# A special token in the text is swapped for a word of one private-use
# character (cleaning has removed every private-use character by then) that
# no later step changes or splits; the word becomes the token before lookup.
_MARKERS = tuple(chr(0xE000 + i) for i in range(len(SPECIAL_TOKENS)))


def read_vocab_file(path: str) -> tuple[str, ...]:
    """The tokens of a vocab.txt, id = line number (line ends stripped, as HF reads it)."""
    if not tf.io.gfile.exists(path):
        raise T5mtlError(f"WordPiece vocabulary file {path!r} does not exist")
    with tf.io.gfile.GFile(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise T5mtlError(f"WordPiece vocabulary file {path!r} is not UTF-8: {e}") from e
    tokens = tuple(line.rstrip("\r") for line in text.split("\n"))
    if tokens and tokens[-1] == "":
        tokens = tokens[:-1]  # the final newline ends the last line
    if not tokens:
        raise T5mtlError(f"WordPiece vocabulary file {path!r} is empty")
    seen = {}
    for i, token in enumerate(tokens):
        if token in seen:
            raise T5mtlError(
                f"WordPiece vocabulary file {path!r}: token {token!r} is on lines "
                f"{seen[token] + 1} and {i + 1}")
        seen[token] = i
    missing = [t for t in SPECIAL_TOKENS if t not in seen]
    if missing:
        raise T5mtlError(f"WordPiece vocabulary file {path!r} lacks {', '.join(missing)}")
    if seen[PAD] != 0:
        raise T5mtlError(
            f"WordPiece vocabulary file {path!r} has [PAD] at id {seen[PAD]}; t5mtl needs "
            f"[PAD] = 0 (seqio pads with 0)")
    return tokens


class WordPieceVocabulary(seqio.Vocabulary):
    """A BERT vocab.txt as a seqio vocabulary (see the module docstring).

    Args:
      vocab_file: the vocab.txt (local path or URL tf.io.gfile reads).
      lowercase: HF's do_lower_case: strip accents and lowercase (uncased
        vocabularies, e.g. bert-base-uncased and wordpiece_en); False for
        cased ones.
    """

    def __init__(self, vocab_file: str, lowercase: bool = True):
        self._vocab_file = vocab_file
        self._lowercase = bool(lowercase)
        self._tokens = read_vocab_file(vocab_file)
        self._ids = {t: i for i, t in enumerate(self._tokens)}
        self._fingerprint = hashlib.sha256("\n".join(self._tokens).encode()).hexdigest()
        super().__init__(extra_ids=0)

    # -- ids ---------------------------------------------------------------

    @property
    def vocab_file(self) -> str:
        return self._vocab_file

    @property
    def lowercase(self) -> bool:
        return self._lowercase

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token, by id."""
        return self._tokens

    def token_id(self, token: str) -> int:
        if token not in self._ids:
            raise T5mtlError(f"{token!r} is not in the WordPiece vocabulary {self._vocab_file!r}")
        return self._ids[token]

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return self._ids[UNK]

    @property
    def cls_id(self) -> int:
        return self._ids[CLS]

    @property
    def sep_id(self) -> int:
        return self._ids[SEP]

    @property
    def mask_id(self) -> int:
        return self._ids[MASK]

    @property
    def eos_id(self) -> None:
        return None

    @property
    def special_ids(self) -> tuple[int, ...]:
        """The ids of [PAD], [UNK], [CLS], [SEP], [MASK] (never masked, never drawn)."""
        return tuple(self._ids[t] for t in SPECIAL_TOKENS)

    @property
    def _base_vocab_size(self) -> int:
        return len(self._tokens)

    # -- Python ------------------------------------------------------------

    @functools.cached_property
    def tokenizer(self):
        """The `tokenizers.Tokenizer` of the Python path (HF BertTokenizer's pipeline)."""
        from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
        tok = Tokenizer(models.WordPiece(
            dict(self._ids), unk_token=UNK, continuing_subword_prefix=CONTINUATION_PREFIX,
            max_input_chars_per_word=MAX_CHARS_PER_WORD))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None,
            lowercase=self._lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.add_special_tokens([AddedToken(t, normalized=False) for t in SPECIAL_TOKENS])
        return tok

    def _encode(self, s: str) -> list[int]:
        return self.tokenizer.encode(s, add_special_tokens=False).ids

    def _decode(self, ids) -> str:
        out = []
        for token in (self._tokens[int(i)] for i in ids if int(i) != self.pad_id):
            if out:
                token = (token[len(CONTINUATION_PREFIX):] if token.startswith(CONTINUATION_PREFIX)
                         else " " + token)
            for dirty, clean in DECODE_CLEANUP:
                token = token.replace(dirty, clean)
            out.append(token)
        return "".join(out)

    # -- TensorFlow --------------------------------------------------------

    @functools.cached_property
    def _tf_tables(self):
        """The WordPiece tokenizer and the id -> token tensor, made eagerly even
        when first asked for while a tf.data function is traced (they outlive it)."""
        import tensorflow_text as tf_text
        with tf.init_scope():
            table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(self._tokens), tf.range(len(self._tokens), dtype=tf.int64)),
                default_value=-1)
            wordpiece = tf_text.WordpieceTokenizer(
                table, suffix_indicator=CONTINUATION_PREFIX,
                max_bytes_per_word=4 * MAX_CHARS_PER_WORD,  # the char limit is checked first
                token_out_type=tf.int64, unknown_token=UNK)
            return wordpiece, tf.constant(self._tokens)

    def _normalize_tf(self, text: tf.Tensor) -> tf.Tensor:
        import tensorflow_text as tf_text
        text = tf.strings.regex_replace(text, _WHITESPACE, " ")
        text = tf.strings.regex_replace(text, _CONTROL, "")
        for token, marker in zip(SPECIAL_TOKENS, _MARKERS):
            text = tf.strings.regex_replace(text, _escape(token), f" {marker} ")
        text = tf.strings.regex_replace(text, "(" + _CJK + ")", r" \1 ")
        if self._lowercase:
            text = tf_text.normalize_utf8(text, "NFD")
            text = tf.strings.regex_replace(text, r"\p{Mn}", "")
            text = tf.strings.lower(text, encoding="utf-8")
        return text

    @tf.autograph.experimental.do_not_convert
    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        """int32 ids of a string scalar ([n]) or of a batch of strings (ragged [b, None])."""
        import tensorflow_text as tf_text
        s = tf.convert_to_tensor(s, tf.string)
        scalar = s.shape.rank == 0
        text = self._normalize_tf(tf.reshape(s, [-1]))
        words = tf_text.regex_split(
            text, r"[\s\p{Z}]+|" + _PUNCTUATION, _PUNCTUATION)  # [b, words]
        flat = words.flat_values
        for token, marker in zip(SPECIAL_TOKENS, _MARKERS):
            flat = tf.where(tf.equal(flat, marker), token, flat)
        too_long = tf.strings.length(flat, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
        flat = tf.where(too_long, UNK, flat)
        wordpiece, _ = self._tf_tables
        ids = wordpiece.tokenize(flat)  # [words, pieces]
        ids = words.with_flat_values(ids).merge_dims(1, 2)  # [b, pieces]
        ids = tf.cast(ids, tf.int32)
        return ids[0] if scalar else ids

    @tf.autograph.experimental.do_not_convert
    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """Strings of int ids [n] (a scalar) or [b, n] (dense or ragged; [b])."""
        _, tokens = self._tf_tables
        one = not isinstance(ids, tf.RaggedTensor) and ids.shape.rank == 1
        if one:
            ids = ids[tf.newaxis]
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids)
        ids = tf.ragged.boolean_mask(ids, tf.not_equal(ids, self.pad_id))
        pieces = tf.gather(tokens, ids.flat_values)
        first = tf.equal(tf.ragged.range(ids.row_lengths()).flat_values, 0)
        prefix = "^" + _escape(CONTINUATION_PREFIX)
        continued = tf.strings.regex_full_match(pieces, prefix + "(?s:.*)")
        pieces = tf.where(first, pieces, tf.where(
            continued, tf.strings.regex_replace(pieces, prefix, ""), " " + pieces))
        for dirty, clean in DECODE_CLEANUP:
            pieces = tf.strings.regex_replace(pieces, _escape(dirty), clean)
        text = tf.strings.reduce_join(ids.with_flat_values(pieces), axis=-1)
        return text[0] if one else text

    # -- identity ----------------------------------------------------------

    def __eq__(self, other) -> bool:
        return (isinstance(other, WordPieceVocabulary)
                and self._fingerprint == other._fingerprint
                and self._lowercase == other._lowercase)

    def __hash__(self) -> int:
        return hash((self._fingerprint, self._lowercase))

    def __repr__(self) -> str:
        return (f"WordPieceVocabulary({self._vocab_file!r}, lowercase={self._lowercase}, "
                f"vocab_size={self.vocab_size})")


def _escape(literal: str) -> str:
    """`literal` as an RE2 pattern matching it exactly."""
    return "".join("\\" + c if not c.isalnum() else c for c in literal)
