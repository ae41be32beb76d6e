"""Vocabularies (placeholder until the data layer fills it in)."""
import seqio


def get_vocabulary() -> seqio.Vocabulary:
    """The vocabulary tasks are registered with (default: bytes)."""
    return seqio.ByteVocabulary()
