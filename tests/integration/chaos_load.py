"""
Steady load for the chaos suite: N client threads, each with its own
keep-alive session, issuing requests until stopped and recording status,
latency and the X-Request-ID of every answer.  No request may hang: each
has a client timeout, and a timeout is recorded as an outcome of its own.
"""

import threading
import time

import requests


class Outcome:
    __slots__ = ("status", "latency", "request_id", "error", "t")

    def __init__(self, status, latency, request_id, error, t):
        self.status = status
        self.latency = latency
        self.request_id = request_id
        self.error = error
        self.t = t


class Load:
    def __init__(self, issue, threads=4, timeout=5.0, pause=0.0):
        """issue(session, timeout) -> requests.Response"""
        self.issue = issue
        self.nthreads = threads
        self.timeout = timeout
        self.pause = pause
        self.outcomes = []
        self.retries = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    def _once(self, s, t0):
        try:
            r = self.issue(s, self.timeout)
            return Outcome(r.status_code, time.monotonic() - t0,
                           r.headers.get("X-Request-ID"), None, t0)
        except requests.exceptions.Timeout as e:
            return Outcome(None, time.monotonic() - t0, None,
                           f"timeout: {e}", t0)
        except requests.exceptions.RequestException as e:
            return Outcome(None, time.monotonic() - t0, None,
                           f"{type(e).__name__}: {e}", t0)

    def _run(self):
        s = requests.Session()
        while not self._stop.is_set():
            t0 = time.monotonic()
            o = self._once(s, t0)
            if o.error and not o.error.startswith("timeout"):
                # a keep-alive connection closed by a retiring worker as
                # the request went out: retried once on a fresh
                # connection, as HTTP clients do
                s = requests.Session()
                self.retries += 1
                o = self._once(s, t0)
                if o.error:
                    s = requests.Session()
            with self._lock:
                self.outcomes.append(o)
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self):
        for _ in range(self.nthreads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        assert not any(t.is_alive() for t in self._threads), "hung client"

    # -- summaries
    def statuses(self):
        out = {}
        for o in self.outcomes:
            key = o.status if o.status is not None else "error"
            out[key] = out.get(key, 0) + 1
        return out

    def errors(self):
        return [o.error for o in self.outcomes if o.error]

    def max_latency(self):
        return max((o.latency for o in self.outcomes), default=0)

    def answered_ids(self):
        return [o.request_id for o in self.outcomes
                if o.status is not None and o.request_id]
