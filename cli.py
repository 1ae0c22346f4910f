"""How the command-line scripts end on bad input: one line on stderr, exit code 2, no traceback.
Library modules raise ValueError / FileNotFoundError; the scripts turn them into this."""
import sys


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
