"""Policy: reading config.toml and flags, and each rule's decision."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from mcp_backgroundr.core.policy import Policy, load_policy
from mcp_backgroundr.errors import BackgroundrError, InvalidArgumentError, PolicyRefusedError


def test_no_file_and_no_flags_allow_what_a_shell_would(tmp_path: Path) -> None:
    policy = load_policy(tmp_path / "config.toml")
    assert policy == Policy()
    assert policy.runtime_limit(None) is None
    assert policy.environment({"A": "1"}) == {"A": "1"}
    assert policy.checked_cwd("/tmp/../etc") == "/tmp/../etc"
    policy.check_command("anything at all")
    policy.check_room(10_000)


def test_a_flag_replaces_the_setting_of_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("max_tasks = 3\ndeny_commands = ['a']\n")
    policy = load_policy(config, {"max_tasks": 7, "deny_commands": None})
    assert policy.max_tasks == 7
    assert [rule.pattern for rule in policy.deny_commands] == ["a"]


def test_roots_are_resolved_so_symlinks_cannot_escape(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    policy = load_policy(tmp_path / "none.toml", {"allowed_cwd": [str(tmp_path / "link")]})
    assert policy.allowed_cwd == (tmp_path.resolve() / "real",)
    real = str(tmp_path.resolve() / "real")
    assert policy.checked_cwd(str(tmp_path / "real")) == real
    assert policy.checked_cwd(str(tmp_path / "link")) == real  # the task runs where the check looked
    with pytest.raises(PolicyRefusedError, match="allowed_cwd"):
        policy.checked_cwd(str(tmp_path))
    with pytest.raises(BackgroundrError, match="ambiguous"):
        load_policy(tmp_path / "none.toml", {"allowed_cwd": []})
    with pytest.raises(BackgroundrError, match="use an absolute path"):
        load_policy(tmp_path / "none.toml", {"allowed_cwd": ["relative/dir"]})


def test_runtime_limit_defaults_then_falls_back_to_the_maximum() -> None:
    assert Policy(max_runtime_seconds=60).runtime_limit(None) == 60
    assert Policy(default_runtime_seconds=5, max_runtime_seconds=60).runtime_limit(None) == 5
    assert Policy(max_runtime_seconds=60).runtime_limit(30) == 30
    with pytest.raises(PolicyRefusedError, match=r"max_runtime_seconds \(60\)"):
        Policy(max_runtime_seconds=60).runtime_limit(61)
    for bad in (0.0, -1.0, math.inf, math.nan, 1e300):
        with pytest.raises(InvalidArgumentError, match="max_runtime_seconds"):
            Policy().runtime_limit(bad)


def test_env_passthrough_takes_names_patterns_and_comma_lists(tmp_path: Path) -> None:
    policy = load_policy(tmp_path / "none.toml", {"env_passthrough": ["PATH, LC_*", "HOME"]})
    inherited = policy.environment({"PATH": "/bin", "LC_ALL": "C", "HOME": "/h", "SECRET": "x", "LC": "no"})
    assert inherited == {"PATH": "/bin", "LC_ALL": "C", "HOME": "/h"}
    assert load_policy(tmp_path / "none.toml", {"env_passthrough": []}).environment({"A": "1"}) == {}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("max_tasks = true\n", "max_tasks=true is invalid"),
        ("max_tasks = 1.5\n", "max_tasks=1.5 is invalid"),
        ("max_runtime_seconds = -1\n", "max_runtime_seconds=-1 is invalid"),
        ("deny_commands = 'rm'\n", "use a list of strings"),
        ("env_passthrough = [1]\n", "use a list of strings"),
    ],
)
def test_bad_settings_name_the_setting_and_the_file(tmp_path: Path, text: str, complaint: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(BackgroundrError, match="policy setting") as raised:
        load_policy(config)
    assert complaint in str(raised.value) and str(config) in str(raised.value)


def test_describe_lists_each_rule_in_force() -> None:
    policy = Policy(max_tasks=4, env_passthrough=())
    assert policy.describe() == ["max_tasks: 4", "env_passthrough: (nothing)"]


def test_a_bad_value_is_blamed_on_where_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("max_tasks = 3\n")
    with pytest.raises(BackgroundrError, match=r"max_tasks=0 is invalid.*from its command-line flag"):
        load_policy(config, {"max_tasks": 0})
    config.write_text("max_tasks = 0\n")
    with pytest.raises(BackgroundrError, match=re.escape(f"from {config}")):
        load_policy(config)
    assert load_policy(config, {"max_tasks": 2}).max_tasks == 2


def test_task_limits_cap_what_a_task_asks_and_refuse_what_the_kernel_cannot_take(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("max_memory_bytes = 1048576\nmax_processes = 64\n")
    policy = load_policy(config)
    assert policy.task_limit("max_memory_bytes", None) == 1048576
    assert policy.task_limit("max_processes", 8) == 8
    with pytest.raises(PolicyRefusedError, match="ask for 64 or less"):
        policy.task_limit("max_processes", 65)
    with pytest.raises(InvalidArgumentError, match="max_memory_bytes=0 is invalid"):
        policy.task_limit("max_memory_bytes", 0)
    with pytest.raises(InvalidArgumentError, match=re.escape("from 1048576 (1 MiB)")):
        policy.task_limit("max_memory_bytes", 1048575)
    config.write_text(f"max_processes = {1 << 40}\n")
    with pytest.raises(BackgroundrError, match="max_processes=1099511627776 is invalid: use 1 to 4194304"):
        load_policy(config)
    config.write_text("max_memory_bytes = 5\n")  # no task could start under it: taken before
    with pytest.raises(BackgroundrError, match="max_memory_bytes=5 is invalid: use 1048576 to"):
        load_policy(config)
