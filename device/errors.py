"""Errors the daemon reports as one clear line and a non-zero exit, never a traceback wall."""


class EmotionEdgeError(Exception):
    """Base class: the message is meant for the user as it is."""


class ConfigError(EmotionEdgeError):
    """A config key is missing, of the wrong type or out of range; the message names the key.

    Validation reports every problem of a file at once: `messages` holds one line per problem
    and `str()` joins them with newlines.
    """

    def __init__(self, *messages: str):
        self.messages = [str(m) for m in messages]
        super().__init__("\n".join(self.messages))


class ModelError(EmotionEdgeError):
    """A model file is missing, corrupt, or does not match its metadata."""


class SourceError(EmotionEdgeError):
    """A frame source cannot be opened (unknown kind, missing device or file)."""
