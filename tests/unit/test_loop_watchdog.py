"""The loop watchdog reports a blocked event loop once, with the stack of the function blocking it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, time
    from agents.runtime.loop_watchdog import LoopWatchdog

    def blocking_call_on_the_loop():
        time.sleep(1.5)  # what a lock held by another thread looks like from the loop

    async def main():
        watchdog = LoopWatchdog(stall_s=0.5, beat_s=0.05)
        watchdog.start()
        await asyncio.sleep(0.3)
        blocking_call_on_the_loop()
        await asyncio.sleep(0.5)  # turning again: no second report
        await watchdog.stop()
        print("stalls", watchdog.stalls, flush=True)

    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
    """
)


def test_a_blocked_loop_is_reported_once_with_the_blocking_stack() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "stalls 1" in done.stdout
    assert done.stderr.count("the event loop has not turned") == 1, done.stderr
    assert "blocking_call_on_the_loop" in done.stderr, "the dump names the function that blocks the loop"


def test_a_loop_that_turns_is_never_reported() -> None:
    script = SCRIPT.replace("blocking_call_on_the_loop()\n", "await asyncio.sleep(1.5)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "stalls 0" in done.stdout
    assert "has not turned" not in done.stderr
