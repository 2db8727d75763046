"""`omnigen generate --help`: every flag says what giving it does; a --no- flag says what it turns off in its own
words; --device, --dtype and --time-shift say what they mean."""

import argparse

import pytest

from omnigen.cli import add_generate_parser, flag_of
from omnigen.settings import GenerationSettings, setting_fields, value_type


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    parser = argparse.ArgumentParser()
    add_generate_parser(parser.add_subparsers())
    generate = parser._subparsers._group_actions[0].choices["generate"]
    return {action.option_strings[0]: action.help or "" for action in generate._actions if action.option_strings}


def test_every_flag_has_help(helps):
    assert all(text.strip() for text in helps.values()), [flag for flag, text in helps.items() if not text.strip()]


def test_negated_flags_say_what_they_do_in_their_own_words(helps):
    library = GenerationSettings()
    negated = [spec for spec in setting_fields() if value_type(spec) is bool and getattr(library, spec.name)]
    assert {flag_of(spec) for spec in negated} == {"--no-kv-cache", "--no-img-guidance"}
    for spec in negated:
        text = helps[flag_of(spec)]
        assert text == spec.metadata["flag_help"] and "default" not in text
        assert text != spec.metadata["help"]  # the setting's help describes what the flag turns off
    assert "recompute" in helps["--no-kv-cache"] and "two branches" in helps["--no-img-guidance"]


def test_device_dtype_and_time_shift_say_what_they_mean(helps):
    assert "cuda" in helps["--device"] and "cpu" in helps["--device"]
    assert "float16 on a GPU without bfloat16" in helps["--dtype"]
    assert "1: no warp" in helps["--time-shift"] and "uniform" not in helps["--time-shift"]
