"""``summary_engine: server``: the summarizer's calls sent to an OpenAI-compatible inference server
(``vllm serve``, SGLang, llama.cpp's ``llama-server``, ...), many at a time.

Prompt rendering (``summary_server_prompt``, part of the store's key):

* ``tokens`` (default): the plugin frames each prompt itself, exactly as the local decoders do (the
  chat template, one BOS, an over-long prompt cut inside its text:
  :class:`~recbole_trsr.prompt.FramedPrompts`), and sends the token ids to ``/completions``. The server
  reads the same tokens a ``local`` run would; it must serve the model whose tokenizer
  ``summary_llm_path`` names. vLLM, SGLang and llama-server take token-id prompts.
* ``chat``: the text goes to ``/chat/completions`` as one user message and the server applies its own
  chat template (for a server that takes no token ids; its template may differ from the tokenizer's).
  An over-long prompt is still cut inside its text first, by the same tokenizer.

Every answer is handed back as it arrives, so the summarizer stores it at once: a killed run, or a
server that died, resumes with only the calls whose answers are not stored. Connection errors,
timeouts, 429 and 5xx are retried by urllib3 (doubling backoff, the server's ``Retry-After``
honoured); what is left is a :class:`ServerError` naming the URL. An empty answer, or one that ended for another reason than a stop or the
``summary_max_new_tokens`` cap (the cap the local decoders apply too), is never stored: it is
counted, logged, and the run stops with an error once every good answer is stored.
"""
import hashlib
import json
import logging
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import urllib3
from urllib3.util import Retry

from recbole_trsr.prompt import FramedPrompts, encode

logger = logging.getLogger(__name__)

PROMPT_MODES = ("tokens", "chat")
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class ServerError(RuntimeError):
    """The summary server could not give an answer (unreachable, refused the request, or no model of
    that name); the message names the URL."""


class BadAnswers(ServerError):
    """Answers the server gave that are not summaries (empty, or cut for another reason than the cap):
    counted, never stored."""


class ServerEngine:
    """Summary calls on an OpenAI-compatible server at ``url`` (its ``/v1`` root) serving ``model``.

    ``tokenizer`` frames and cuts the prompts (the summarizer model's, as for ``local``). ``sampling``:
    ``temperature`` (0: greedy), ``top_p`` and ``seed`` (each request's seed is derived from it and the
    prompt, so a rerun asks for the same samples in any order). ``calls_per_batch = 1``: the summarizer
    hands over one prompt per batch, and stores each answer as it arrives.
    """

    calls_per_batch = 1

    def __init__(self, url, model, tokenizer, prompt_mode="tokens", max_new_tokens=48, max_prompt_tokens=768,
                 use_chat_template=True, concurrency=16, timeout=600, retries=5, backoff=1.0, sampling=None,
                 api_key=None):
        if prompt_mode not in PROMPT_MODES:
            raise ValueError(f"summary_server_prompt must be one of {PROMPT_MODES}, not {prompt_mode!r}")
        if not url:
            raise ValueError("summary_engine: server needs summary_server_url (e.g. http://127.0.0.1:8000/v1)")
        if not model:
            raise ValueError("summary_engine: server needs summary_server_model (a name the server's /v1/models lists)")
        self.url, self.model, self.prompt_mode = url.rstrip("/"), model, prompt_mode
        self.frames = FramedPrompts(tokenizer, use_chat_template, max_prompt_tokens)
        self.max_new_tokens, self.concurrency = int(max_new_tokens), max(1, int(concurrency))
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.sampling = dict(sampling or {})
        self.api_key = api_key
        self.http, self._lock = self._pool(), threading.Lock()
        self.n_requests = 0  # requests that got an answer, good or bad
        self.n_retries = 0
        self.n_capped = 0  # answers that stopped at max_new_tokens (stored, as the local decoders' are)
        self.bad = {"empty": 0, "cut": 0}
        self.check_model()

    @property
    def prompts_cut(self):
        return self.frames.n_truncated

    # --- HTTP
    def _pool(self):
        # urllib3 (in the lock through requests) does the retries: connection errors, read timeouts and
        # RETRY_STATUS answers, with doubling backoff and the server's Retry-After honoured.
        retry = Retry(total=self.retries, allowed_methods=None, status_forcelist=RETRY_STATUS,
                      backoff_factor=self.backoff, backoff_max=30.0, raise_on_status=False)
        return urllib3.PoolManager(maxsize=self.concurrency, block=True, retries=retry,
                                   timeout=urllib3.Timeout(connect=min(30.0, self.timeout), read=self.timeout))

    def _request(self, path, body=None):
        """The JSON answer of ``GET``/``POST {url}{path}``; a :class:`ServerError` naming the URL when
        the retries are spent or the server refuses."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        method, data = ("GET", None) if body is None else ("POST", json.dumps(body).encode())
        try:
            response = self.http.request(method, self.url + path, body=data, headers=headers)
        except urllib3.exceptions.MaxRetryError as exc:
            raise self._gave_up(exc.reason) from None
        except urllib3.exceptions.HTTPError as exc:  # a connection error with retries switched off
            raise self._gave_up(exc) from None
        history = response.retries.history if response.retries else ()
        if history:
            with self._lock:
                self.n_retries += len(history)
        if response.status >= 400:
            detail = response.data.decode(errors="replace")[:500]
            if response.status in RETRY_STATUS:
                raise self._gave_up(f"HTTP {response.status}: {detail}")
            self._refused(response.status, detail, body)
        try:
            return json.loads(response.data)
        except ValueError:
            raise ServerError(f"summary server {self.url}{path} answered HTTP {response.status} with no JSON: "
                              f"{response.data[:200]!r}") from None

    def _gave_up(self, reason):
        return ServerError(f"summary server {self.url} did not answer after {self.retries + 1} tries ({reason}); "
                           "every answer received so far is stored: start the server and run again to make only the "
                           "missing calls")

    def _refused(self, code, detail, body):
        if code == 404 and body is None:
            raise ServerError(f"{self.url}/models not found (HTTP 404): summary_server_url must be the server's "
                              "OpenAI-compatible root, ending in /v1")
        low = detail.lower()
        if code in (400, 413) and "context" in low:  # vLLM: "maximum context length"; llama-server: "context size"
            raise ServerError(f"summary server {self.url} refused a prompt over its context (HTTP {code}: {detail}): "
                              "lower summary_prompt_max_tokens, or serve a longer context (vllm --max-model-len, "
                              "llama-server --ctx-size per --parallel slot)")
        if code == 404 or "model" in low and ("not found" in low or "does not exist" in low):  # vLLM, SGLang
            raise ServerError(f"summary server {self.url} does not serve summary_server_model={self.model!r} "
                              f"(HTTP {code}: {detail})")
        raise ServerError(f"summary server {self.url} refused the request (HTTP {code}: {detail})")

    def check_model(self):
        """Fail at once, naming the URL, if the server is unreachable or does not serve ``model``."""
        served = [m.get("id") for m in self._request("/models").get("data", [])]
        if self.model not in served:
            raise ServerError(f"summary server {self.url} does not serve summary_server_model={self.model!r}; "
                              f"it serves {served}")

    # --- one call
    def _body(self, prompt):
        body = {"model": self.model, "max_tokens": self.max_new_tokens, "stream": False,
                "temperature": float(self.sampling.get("temperature") or 0.0)}
        if self.sampling.get("top_p") not in (None, 1, 1.0):
            body["top_p"] = float(self.sampling["top_p"])
        if self.sampling.get("seed") is not None:
            body["seed"] = int(hashlib.sha1(f"{self.sampling['seed']}\x1f{prompt}".encode()).hexdigest()[:8], 16)
        if self.prompt_mode == "tokens":
            body["prompt"] = self.frames([prompt])[0]
            return "/completions", body
        ids = encode(self.frames.tokenizer, prompt)
        if len(self.frames.frame_ids()) + len(ids) + len(encode(self.frames.tokenizer, self.frames.tail)) > \
                self.frames.max_prompt_tokens:
            self.frames.n_truncated += 1
            prompt = self.frames.tokenizer.decode(self.frames.cut_body(prompt))
        body["messages"] = [{"role": "user", "content": prompt}]
        return "/chat/completions", body

    def answer(self, prompt):
        """``(text, None)`` for a summary, or ``(None, why)`` for an answer that is not one."""
        return self._send(*self._body(prompt))

    def _send(self, path, body):
        reply = self._request(path, body)
        choice = (reply.get("choices") or [{}])[0]
        text = choice.get("text") if self.prompt_mode == "tokens" else (choice.get("message") or {}).get("content")
        text, finish = (text or "").strip(), choice.get("finish_reason")
        with self._lock:
            self.n_requests += 1
            if text and finish == "length":
                self.n_capped += 1
        if not text:
            return None, "empty"
        if finish not in ("stop", "length"):
            return None, "cut"
        return text, None

    # --- the engine interface
    def map(self, batches):
        """``(index, texts)`` of each batch as its answers arrive, ``concurrency`` requests in flight."""
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="summary-server")
        pending, queue = {}, iter(enumerate(batches))

        def submit(index, batch):
            requests = [self._body(p) for p in batch]  # framed here: only this thread uses the tokenizer
            pending[pool.submit(lambda: [self._send(*r) for r in requests])] = index

        try:
            for index, batch in queue:
                submit(index, batch)
                if len(pending) >= self.concurrency:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    answers = future.result()  # a ServerError ends the run here; what came back is stored
                    for _, why in answers:
                        if why:
                            self.bad[why] += 1
                    if all(why is None for _, why in answers):
                        yield index, [text for text, _ in answers]
                    nxt = next(queue, None)
                    if nxt is not None:
                        submit(*nxt)
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
        self._report()

    def _report(self):
        logger.info("summary server %s: %d answers, %d retries, %d stopped at summary_max_new_tokens=%d",
                    self.url, self.n_requests, self.n_retries, self.n_capped, self.max_new_tokens)
        if any(self.bad.values()):
            raise BadAnswers(f"summary server {self.url} gave {self.bad['empty']} empty answers and {self.bad['cut']} "
                             "that ended before a stop or the token cap; none was stored as a summary (every good "
                             "answer was). Check the model and summary templates; a rerun asks only for those calls")

    def close(self):
        self.http.clear()


def api_key(config):
    """The API key from the environment variable ``summary_server_api_key_env`` names (never a file)."""
    name = config["summary_server_api_key_env"]
    return os.environ.get(name) if name else None
