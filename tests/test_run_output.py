"""What a run shows a person: progress bars at a terminal (and none in a log or a pipe), one line for
the LLM model instead of its module tree, and no warning that is ours to fix or to silence."""
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
import warnings
from pathlib import Path

from conftest import DATASET, llm_config
from recbole_trsr.quick_start import run

HERE = Path(__file__).resolve().parent
BAR = re.compile(r"Train\s+0:\s+\d+%\|.*\| \d+/\d+ \[[\d:]+<[\d:]+")  # tqdm: count, elapsed < time left


def tiny_run_command(data_root, tmp_path, tiny_llm, **overrides):
    config = llm_config(data_root, tmp_path, tiny_llm, model="LLMTRSR", dataset=DATASET, **overrides)
    config.pop("summary_progress")  # the default (~): on at a terminal only
    return [sys.executable, str(HERE / "run_tiny.py"), json.dumps(config)]


def at_a_terminal(command, cwd, timeout=240):
    """The command's output (stdout and stderr) as a terminal shows it."""
    main, child = pty.openpty()
    # a terminal window of 40 x 120: a new pty is 0 x 0, and tqdm draws a bar of width 0 into it
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(command, stdin=child, stdout=child, stderr=child, cwd=cwd, close_fds=True)
    os.close(child)
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    process.wait(timeout=30)
    os.close(main)
    assert process.returncode == 0, out.decode(errors="replace")[-3000:]
    return out.decode(errors="replace")


def test_a_terminal_shows_bars_with_a_time_left_and_a_pipe_shows_none(data_root, tmp_path, tiny_llm):
    terminal = at_a_terminal(tiny_run_command(data_root, tmp_path / "tty", tiny_llm), cwd=tmp_path)
    assert BAR.search(terminal), terminal[-2000:]
    assert re.search(r"summaries, depth 0 of \d+:.*call/s", terminal)
    piped = subprocess.run(tiny_run_command(data_root, tmp_path / "pipe", tiny_llm), cwd=tmp_path,
                           capture_output=True, text=True, timeout=240)
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert "it/s" not in piped.stderr + piped.stdout and not BAR.search(piped.stderr)
    assert "call/s]" not in piped.stderr and "batch/s]" not in piped.stderr
    forced = subprocess.run(tiny_run_command(data_root, tmp_path / "forced", tiny_llm, show_progress=True),
                            cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert BAR.search(forced.stderr)  # an explicit show_progress wins


def test_the_llm_model_is_one_line_and_a_run_raises_no_warning_of_ours(data_root, tmp_path, tiny_llm):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run("LLMTRSR", DATASET, config_dict=llm_config(data_root, tmp_path, tiny_llm, gradient_checkpointing=True))
        run("SASRec", DATASET, config_dict=llm_config(data_root, tmp_path / "sasrec", tiny_llm, hidden_size=16,
                                                      inner_size=32, n_layers=1))
    ours = [w for w in caught if "recbole_trsr" in w.filename]
    # DeprecationWarnings raised inside a library about itself are hidden by Python's default filters
    shown = [w for w in caught if not (issubclass(w.category, DeprecationWarning) and "site-packages" in w.filename)]
    assert not ours and not shown, [f"{w.category.__name__} {w.filename}:{w.lineno} {w.message}" for w in ours + shown]
    log = next(p for p in (tmp_path / "log").rglob("*.log") if "LLMTRSR" in p.name).read_text()
    assert "LlamaDecoderLayer" not in log and "lora_A" not in log
    line = re.search(r"LLMTRSR: backbone \S+ \(LlamaForCausalLM, 2 layers\), float32, [\d.]+M parameters, "
                     r"([\d,]+) trainable \([\d.]+%\), LoRA r=8 on k_proj,o_proj,q_proj,v_proj in 2 layers, "
                     r"quantization none", log)
    assert line, log[-3000:]
    assert int(line.group(1).replace(",", "")) > 0
