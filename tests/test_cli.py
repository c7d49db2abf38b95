import pytest

from s2r_data import cli


def test_every_command_module_has_a_main():
    import importlib

    for name, (module, _help) in cli.COMMANDS.items():
        assert callable(importlib.import_module(module).main), name


def test_unknown_command_lists_the_known_ones(capsys):
    assert cli.main(["bogus"]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "harvest" in err and "render" in err


def test_help(capsys):
    assert cli.main(["--help"]) == 0
    assert "s2r city build" in capsys.readouterr().out


def test_dispatches_to_the_module(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["store", "--help"])
    assert e.value.code == 0
    assert "verify" in capsys.readouterr().out
