"""`leoma devnet`'s progress for people and its rule for keeping the dashboard up (no devnet run)."""

from __future__ import annotations

import pytest

from leoma.devnet.config import Progress
from leoma_cmd.devnet_cmds import ProgressDisplay, should_serve


def snap(block: int, *, turn: str = "validator1", tasks: int = 0, scored: tuple[int, ...] = (0, 0),
         decided: tuple[int, ...] = (-1, -1), target: int = -1) -> Progress:
    return Progress(block=block, epoch=block // 80, turn=turn, tasks=tasks, verdicts=tasks * 5, mirror_lag=0,
                    scored={f"validator{i + 1}": n for i, n in enumerate(scored)}, judged=max(0, tasks - 1),
                    decided={f"validator{i + 1}": n for i, n in enumerate(decided)}, target=target)


def test_plain_lines_without_a_terminal_one_per_change(capsys: pytest.CaptureFixture[str]) -> None:
    show = ProgressDisplay(2, tty=False)
    show(snap(7998, tasks=0))
    show(snap(7999, tasks=0))            # only the block moved: no new line
    show(snap(8001, turn="validator2", tasks=1))
    show(snap(8100, turn="validator2", tasks=3, scored=(1, 1), decided=(101, 100), target=102))
    show.done()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "\r" not in "".join(lines)
    assert lines[0].startswith("block 7998 · epoch 99 · turn validator1 · tasks 0 (0 judged, 0 verdicts)")
    assert "epochs decided [1:- 2:-] (2 full-window epochs to go)" in lines[0]
    assert "turn validator2 · tasks 1 (0 judged, 5 verdicts)" in lines[1]
    assert "epochs decided [1:101 2:100] (run ends at 102)" in lines[2]


def test_one_line_rewritten_in_place_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    show = ProgressDisplay(1, tty=True)
    show(snap(10))
    show(snap(11, tasks=2, decided=(5, 5), target=5))
    out = capsys.readouterr().out
    assert out.count("\r") == 2 and "\n" not in out
    assert "epochs decided [1:5 2:5] (run ends at 5)" in out
    show.done()
    assert capsys.readouterr().out == "\n"


@pytest.mark.parametrize("serve,with_api,as_json,interactive,expected", [
    (None, True, False, True, True),     # a person at a terminal: the dashboard stays up
    (None, True, False, False, False),   # scripts, tests, CI: never wait
    (None, True, True, True, False),     # --json is for machines
    (True, True, True, False, True),     # --serve asks for it
    (False, True, False, True, False),   # --no-serve
    (True, False, False, True, False),   # --no-api: nothing to serve
])
def test_the_dashboard_is_kept_only_for_a_person(serve: bool | None, with_api: bool, as_json: bool,
                                                 interactive: bool, expected: bool) -> None:
    assert should_serve(serve, with_api=with_api, as_json=as_json, interactive=interactive) is expected
