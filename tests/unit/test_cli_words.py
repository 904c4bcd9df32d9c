"""The CLI's small truths: `[section]` names survive in help and errors, `credits show` exists, and
refused load-test submits come with what to change."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from serve_app.cli.loadreport import LoadReport, hints
from serve_app.cli.main import app, token_command

runner = CliRunner()


def test_section_names_in_help_and_errors_are_printed_as_written(tmp_path: Path) -> None:
    """Rich would read `[webhooks]` as markup and drop it; the help and a config error keep it."""
    helped = runner.invoke(app, ["token", "create", "--help"], env={"COLUMNS": "200"})
    assert helped.exit_code == 0 and "[webhooks] secret" in helped.output
    assert "[server] data_dir" in helped.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[queue]\nslotz = 3\n")
    failed = runner.invoke(app, ["token", "secret", "abc", "--config", str(bad)])
    assert failed.exit_code == 2
    assert failed.output.strip().startswith("config error: [queue]: unknown key 'slotz'")
    off = runner.invoke(app, ["token", "secret", "abc"])
    assert off.exit_code == 1 and "the config has no [webhooks] secret" in off.output


def test_credits_show_is_listed_and_has_help() -> None:
    """The credits group's help names show, and show has its own help."""
    listed = runner.invoke(app, ["credits", "--help"])
    assert "grant" in listed.output and "show" in listed.output
    shown = runner.invoke(app, ["credits", "show", "--help"])
    assert shown.exit_code == 0 and "--data-dir" in shown.output and "--config" in shown.output


def test_the_token_command_carries_the_flags_up_was_given() -> None:
    """Whatever `up` was told of the config and the data directory, the token command is told too."""
    bare = token_command(None, None)
    assert bare.endswith("genqueue token create --user ops --role admin")
    both = token_command(Path("my conf.toml"), Path("/srv/gq"))
    assert both.endswith("--role admin --config 'my conf.toml' --data-dir /srv/gq")


def _report(rejected: dict[str, int]) -> LoadReport:
    return LoadReport(
        users=10,
        kind="mixed",
        ramp_seconds=0.0,
        accepted=10 - sum(rejected.values()),
        rejected=rejected,
        submit_p50_ms=1.0,
        submit_p99_ms=1.0,
        wait_p50_s=0.0,
        wait_p90_s=0.0,
        wait_p99_s=0.0,
        time_to_image_p50_s=0.0,
        time_to_image_p90_s=0.0,
        time_to_image_p99_s=0.0,
        makespan_s=0.0,
        call_mean_s=0.0,
        hold_p50_s=0.0,
        succeeded=0,
        failures={},
        followed={},
        bound=None,
        efficiency=None,
    )


def test_refused_submits_come_with_the_token_or_setting_that_lets_them_in() -> None:
    """402s point at default_grant, 401s and 429s at a service token; accepted runs get no hint."""
    found = hints(_report({"402 Insufficient credits": 3, "401 Unauthorized": 2, "429 Too many requests": 1}))
    assert len(found) == 3 and all(line.startswith("hint: ") for line in found)
    assert "--role service" in found[0] and "[credits] default_grant" in found[1]
    assert "user_submit_rate" in found[2] and "--role service" in found[2]
    assert hints(_report({})) == [] and hints(_report({"no answer: ClientOSError": 1})) == []
