"""Commands in answers: whole when short, else cut to one bound, saying so and where the whole is."""

from __future__ import annotations

from mcp_backgroundr.errors import shown_value
from mcp_backgroundr.models import SHOWN_COMMAND_LENGTH, Survivor, one_line, shown_command


def test_a_short_command_is_shown_whole_and_a_long_one_cut_with_where_to_read_it() -> None:
    assert shown_command("npm run dev", "t1") == "npm run dev"
    long = "x" * 100_000
    shown = shown_command(long, "t1")
    assert shown.startswith("x" * (SHOWN_COMMAND_LENGTH - 3) + "...")
    assert "100000 characters" in shown and "task://t1/command" in shown
    assert len(shown) < 2 * SHOWN_COMMAND_LENGTH


def test_one_line_shows_line_breaks_and_every_cut_is_the_same() -> None:
    assert one_line("a\nb\r") == "a\\nb\\r"
    assert one_line("\x1b[1m\x07\x08\t\x85\u202e\u2028é") == "\\x1b[1m\\x07\\x08\\t\\x85\\u202e\\u2028é"
    assert shown_value("\u202e\x7f") == '"\\u202e\\x7f"'
    assert one_line("abcdef", 5) == "ab..."
    assert shown_value("abcdef", 6) == '"ab...'
    survivor = Survivor(pid=1, command="python3 -c '\n" + "y" * 10_000, reason="x")
    assert len(survivor.command) == SHOWN_COMMAND_LENGTH and "\n" not in survivor.command
