"""The key pool's open asks (`actors.keypool.asks`): a wait for several attempts' tokens returns
once one is answered, with every answer ready by then; the rest keep their places and their
answers wait for the next; an ask past its deadline is refused and leaves the line; a round's
attempts are handed on as their answers come (`hand_on`)."""

from __future__ import annotations

import asyncio
import time

from actors.keypool.asks import DEADLINE, KEEP_SECONDS, Asks
from actors.keypool.handoff import MAX_ASKS, hand_on
from actors.messages import Ask, AttemptSpec, Token


def opened(asks: Asks, *keys: tuple[str, int]) -> dict[tuple[str, int], asyncio.Future[Token]]:
    """A future per key, added to `asks` as the key pool does for an attempt joining the line."""
    futures = {}
    for key in keys:
        futures[key] = asyncio.get_running_loop().create_future()
        asks.add(key, futures[key])
    return futures


def test_a_call_returns_at_the_first_answer_with_every_answer_ready_and_the_rest_stay_open() -> None:
    async def main() -> None:
        asks = Asks()
        futures = opened(asks, ("a", 1), ("b", 1), ("c", 1))
        call = asyncio.ensure_future(asks.answers([Ask("a", 1), Ask("b", 1), Ask("c", 1)]))

        waited: list[bool] = []

        def answer() -> None:  # runs after the call's first step: it is waiting by then
            waited.append(not call.done())
            futures["b", 1].set_result(Token("p1", "k1"))
            futures["c", 1].set_result(Token("p1", "k2"))

        asyncio.get_running_loop().call_soon(answer)
        answered = await asyncio.wait_for(call, 5)
        assert waited == [True]
        assert sorted(answered) == [("b", 1, Token("p1", "k1")), ("c", 1, Token("p1", "k2"))]
        assert asks.get(("a", 1)) is futures["a", 1]  # still waiting, in its place
        assert asks.get(("b", 1)) is None and asks.get(("c", 1)) is None  # handed out
        assert len(asks) == 1

    asyncio.run(main())


def test_an_answer_given_while_no_call_waits_goes_to_the_next_call() -> None:
    async def main() -> None:
        asks = Asks()
        futures = opened(asks, ("a", 1), ("b", 1))
        futures["a", 1].set_result(Token("p1", "k1"))
        first = await asyncio.wait_for(asks.answers([Ask("a", 1), Ask("b", 1)]), 5)
        assert first == [("a", 1, Token("p1", "k1"))]
        futures["b", 1].set_result(Token("p2", "k9"))  # between the calls
        again = await asyncio.wait_for(asks.answers([Ask("b", 1)]), 5)
        assert again == [("b", 1, Token("p2", "k9"))]
        assert len(asks) == 0

    asyncio.run(main())


def test_an_ask_past_its_deadline_is_refused_and_its_future_cancelled_so_the_line_skips_it() -> None:
    async def main() -> None:
        asks = Asks()
        futures = opened(asks, ("late", 1), ("later", 1))
        until = time.time() + 0.05
        answered = await asyncio.wait_for(
            asks.answers([Ask("late", 1, until=until), Ask("later", 1, until=until + 60)]), 5
        )
        assert time.time() >= until
        assert answered == [("late", 1, Token(until=until, reason=DEADLINE))]
        assert futures["late", 1].cancelled() and not futures["later", 1].done()
        assert asks.get(("later", 1)) is futures["later", 1]

    asyncio.run(main())


def test_answers_nobody_came_back_for_are_dropped_after_the_keep_time_waiting_ones_are_not() -> None:
    async def main() -> None:
        now = [1000.0]
        asks = Asks(clock=lambda: now[0])
        futures = opened(asks, ("gone", 1), ("waiting", 1))
        kept = asyncio.Event()  # set by a callback added after the one `Asks.add` added
        futures["gone", 1].add_done_callback(lambda _: kept.set())
        futures["gone", 1].set_result(Token("p1", "k1"))
        await asyncio.wait_for(kept.wait(), 5)
        now[0] += KEEP_SECONDS - 1
        assert asks.prune() == 0 and len(asks) == 2
        now[0] += 2
        assert asks.prune() == 1
        assert asks.get(("gone", 1)) is None and asks.get(("waiting", 1)) is futures["waiting", 1]

    asyncio.run(main())


class OneAtATime:
    """A key pool's answers as a pool with one place freeing at a time gives them: only the first
    ask of each wait is answered; it records each wait's asks."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, int]]] = []

    def __call__(self, asks: list[Ask]) -> asyncio.Future[list[tuple[str, int, Token]]]:
        """The answer comes in the loop's next turn, as a grant turn's would."""
        self.calls.append([(a.task_id, a.attempt) for a in asks])
        first = asks[0]
        future: asyncio.Future[list[tuple[str, int, Token]]] = asyncio.get_running_loop().create_future()
        future.get_loop().call_soon(
            future.set_result, [(first.task_id, first.attempt, Token("p1", f"k-{first.task_id}"))]
        )
        return future


def spec(task_id: str) -> AttemptSpec:
    return AttemptSpec(task_id=task_id, attempt=1, kind="photography", prompt="", inputs={})


def test_a_rounds_attempts_wait_together_each_answer_goes_on_as_it_comes_and_the_rest_wait_again() -> None:
    async def main() -> None:
        answers = OneAtATime()
        sent: list[list[tuple[str, str]]] = []
        handed = await asyncio.wait_for(
            hand_on(
                [spec(t) for t in ("a", "b", "c")],
                answers,
                lambda batch: sent.append([(s.task_id, token.key_id) for s, token in batch]),
            ),
            5,
        )
        assert handed == 3
        assert answers.calls == [[("a", 1), ("b", 1), ("c", 1)], [("b", 1), ("c", 1)], [("c", 1)]]
        assert sent == [[("a", "k-a")], [("b", "k-b")], [("c", "k-c")]]

    asyncio.run(main())


def test_at_most_max_asks_attempts_wait_in_one_loop() -> None:
    async def main() -> None:
        answers = OneAtATime()
        sent: list[str] = []
        count = 2 * MAX_ASKS + 2
        specs = [spec(f"t{n}") for n in range(count)]
        await asyncio.wait_for(hand_on(specs, answers, lambda b: sent.extend(s.task_id for s, _ in b)), 5)
        assert sorted(sent) == sorted(f"t{n}" for n in range(count)) and len(sent) == count
        assert [len(call) for call in answers.calls[:3]] == [MAX_ASKS, MAX_ASKS, 2]
        assert max(len(call) for call in answers.calls) == MAX_ASKS

    asyncio.run(main())
