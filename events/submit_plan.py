"""A submit's writes as Redis commands, computed in Python with blanks for what only the script knows.

An accepted submit's events come from `admission.admit` and their stream entries and read
models from `redis_commands.entry_commands`, as for every other append: the projection rules
stay in Python, in one place. Two things are known only inside the submit's script: the
task's place (its round, from the queue as the script finds it, and its number in that round,
from INCR) and whether the user's default grant applies. So the commands are computed for an
accepted submit with the grant, the grant's commands are marked to run only when it applies,
and every argument that holds the place has blanks where the script writes its numbers.

How the blanks are found: the task's own commands (the only ones `admit` gives its place)
are computed twice, for two places whose numbers differ in every digit, and an argument is
checked to differ exactly where those numbers are written. What the caller sent is the same
in both, so it can neither move nor fake a blank.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from events.admission import FIRST_ROUND, NO_ROUND, Admission, Refusal, Seen, admit
from events.catalogue import CreditsGranted, TaskSubmitted, fair_order, round_of
from events.keys import Keys
from events.redis_commands import entry_commands

# The kinds of blank: the task's order (its queue score, a whole number) and its round.
ORDER, ROUND = "o", "r"
# Two rounds whose numbers, and whose first tasks' orders, differ in every digit.
_PLACES = (1111111111, 2222222222)
# Flags of a command: it runs only when the default grant applies; it is the task's XADD.
GRANT_ONLY, SUBMITTED = "g", "s"


@dataclass(frozen=True, slots=True)
class Blank:
    """Where in argument `arg` (0-based, after the command name) the script writes a number."""

    arg: int
    kind: str
    at: int

    def spec(self) -> list[int | str]:
        """As the script reads it: argument, kind, position."""
        return [self.arg, self.kind, self.at]


@dataclass(frozen=True, slots=True)
class Command:
    """One Redis command of a submit: its name and arguments, blanks, and flags."""

    name: str
    args: tuple[str, ...]
    blanks: tuple[Blank, ...] = ()
    flags: str = ""


def _numbers(round_: int) -> dict[str, str]:
    """The text of each number of a place, as the codec and redis-py write it (an order is a
    whole float: its digits, then ".0", which stays in the argument)."""
    return {ORDER: str(int(fair_order(round_, 1))), ROUND: str(round_)}


_TEXTS = tuple(_numbers(r) for r in _PLACES)


def _blanks(arg: int, a: str, b: str) -> tuple[str, list[Blank]]:
    """Argument `a` (written for the first place) without the place's numbers, and its blanks,
    rightmost first (so that filling one leaves the positions of the others); a ValueError
    unless `a` and `b` (written for the second place) differ exactly there."""
    first, second = _TEXTS
    found: list[tuple[int, str]] = []
    for kind, text in first.items():
        start = a.find(text)
        while start >= 0:
            if b.startswith(second[kind], start):
                found.append((start, kind))
            start = a.find(text, start + len(text))
    found.sort()
    pieces, filled, blanks, end, removed = [], [], [], 0, 0
    for start, kind in found:
        pieces.append(a[end:start])
        filled += [a[end:start], second[kind]]
        blanks.append(Blank(arg, kind, start - removed))
        end = start + len(first[kind])
        removed += len(first[kind])
    pieces.append(a[end:])
    filled.append(a[end:])
    if "".join(filled) != b:
        raise ValueError(f"argument {arg} depends on the task's place otherwise than by its numbers: {a!r}")
    return "".join(pieces), blanks[::-1]


def submit_commands(event: TaskSubmitted, admission: Admission, keys: Keys) -> list[Command]:
    """The commands that accept `event`, with blanks for its place and the grant's marked."""
    seen = Seen(admission.price, welcomed=False, last_round=NO_ROUND, current_round=FIRST_ROUND, waiting=0)
    # The daily cap decides whether the submit passes, never what it writes: left out here.
    events = admit(event, replace(admission, daily_cap=0), seen, _PLACES[0], 1)
    if isinstance(events, Refusal):  # an empty queue and a covered price pass every bound
        raise AssertionError(f"a submit that must pass was refused: {events}")
    plan = []
    for accepted in events:
        first = entry_commands(accepted, keys)
        if not isinstance(accepted, TaskSubmitted):
            flags = GRANT_ONLY if isinstance(accepted, CreditsGranted) else ""
            plan += [Command(name, (key, *args), flags=flags) for name, key, args in first]
            continue
        # Only the task's own event holds its place (`admit` gives it its order): written for
        # the second place too, its arguments that differ hold the place's numbers.
        second = entry_commands(replace(accepted, order=fair_order(_PLACES[1], 1)), keys)
        for i, ((name, key_a, a), (_, key_b, b)) in enumerate(zip(first, second, strict=True)):
            flags = SUBMITTED if i == 0 else ""
            if key_a == key_b and a == b:
                plan.append(Command(name, (key_a, *a), flags=flags))
                continue
            args, blanks = [], []
            for arg, (x, y) in enumerate(zip((key_a, *a), (key_b, *b), strict=True)):
                literal, found = _blanks(arg, x, y) if x != y else (x, [])
                args.append(literal)
                blanks += found
            plan.append(Command(name, tuple(args), tuple(blanks), flags))
    return plan


def fill(command: Command, order: int) -> Command:
    """`command` with its blanks filled for a task of queue order `order` (what the script does;
    for tests)."""
    numbers = {ORDER: str(order), ROUND: str(round_of(order))}
    args = list(command.args)
    for blank in command.blanks:
        text = args[blank.arg]
        args[blank.arg] = text[: blank.at] + numbers[blank.kind] + text[blank.at :]
    return Command(command.name, tuple(args), (), command.flags)
