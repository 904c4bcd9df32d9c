"""The root of genqueue's error tree; the whole tree is drawn here.

GenqueueError                  anything genqueue raises on purpose
├── EventDecodeError           a stream entry that no codec path turns into an event
├── StoreUnavailableError      the event store (Redis or Valkey) did not answer
│   └── StoreInUseError        (serve_app/valkey.py) another process runs the embedded
│                              Valkey on these files
├── ArchiveError               (events/archive.py) the archive cannot be written or read
│   └── SegmentError           a segment file that is half-written, altered or missing
├── ConfigError                (actors/config.py) an invalid setting; the message names the key
├── BlobNotFoundError          (actors/blobs.py) no blob under a reference; also a LookupError
├── ProviderError              (actors/providers/base.py) a call ended without an image;
│                              its `failure` says what genqueue does about it
├── BadRequest                 (actors/providers/gemini_wire.py) a body the Gemini API would
│                              refuse with 400; the emulator's; also a ValueError
├── ImageRejected              (serve_app/images.py) an input image that cannot be used; also a ValueError
├── LoadtestError              (serve_app/loadtest.py) the load test could not run at all
└── StartupError               (serve_app/runtime.py) genqueue cannot start as configured;
                               the message names the setting and what to do

The HTTP problems (serve_app/problems.py, rooted at ApiProblem) are a tree of their own:
they are answers already chosen for a client, not errors of the system. Kept apart, a
handler or an `except GenqueueError` that turns a failure into a 503 never rewrites a
404 already decided; and the tree above holds only errors that pickle whole (they cross
Ray), which an ApiProblem, with its headers and keyword fields, does not.
"""

from __future__ import annotations


class GenqueueError(Exception):
    """Root of every error genqueue raises on purpose."""


class EventDecodeError(GenqueueError):
    """A stream entry could not be decoded into a known event."""


class StoreUnavailableError(GenqueueError):
    """The event store (Redis or Valkey) did not answer."""
